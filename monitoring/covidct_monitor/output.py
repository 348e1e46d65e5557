"""Writing report files atomically, the HTML index pages, and the run history (`OUT/<UTC
timestamp>/` directories plus the `OUT/latest` symlink)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RUN_DIR_RE = re.compile(r"^\d{8}T\d{6}Z(?:-\d+)?$")
LATEST = "latest"
PARTIAL_SUFFIX = ".partial"
# A `.partial` run directory older than this was left by a killed run and is removed.
STALE_PARTIAL_SECONDS = 6 * 3600


def write_atomic(path: Path, data, mode: int = 0o644) -> None:
    """Writes `data` (str or bytes) to `path` through a temporary file in the same directory and
    os.replace, so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def remove_if_exists(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- run history


def new_run_name(root: Path, moment: datetime | None = None) -> str:
    moment = moment or datetime.now(timezone.utc)
    base = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 1
    while (root / name).exists() or (root / f".{name}{PARTIAL_SUFFIX}").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _run_sort_key(name: str):
    base, _, suffix = name.partition("-")
    return (base, int(suffix) if suffix else 1)


def list_runs(root: Path) -> list:
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink() and RUN_DIR_RE.match(p.name)]
    return sorted(names, key=_run_sort_key)


def latest_target(root: Path) -> str | None:
    link = root / LATEST
    if link.is_symlink():
        return os.path.basename(os.readlink(link))
    return None


def point_latest(root: Path, name: str) -> None:
    """Swaps `root/latest` to point at `name` atomically (a new relative symlink renamed over the
    old one)."""
    link = root / LATEST
    if link.exists() and not link.is_symlink():
        raise OSError(f"{link} exists and is not a symlink; move it away so the job can manage it")
    tmp = root / f".{LATEST}.{os.getpid()}.tmp"
    remove_if_exists(tmp)
    os.symlink(name, tmp)
    os.replace(tmp, link)


def prune(root: Path, keep: int) -> list:
    """Removes all but the newest `keep` run directories (never the one `latest` points at) and
    `.partial` directories of killed runs. Returns the names removed."""
    removed = []
    current = latest_target(root)
    runs = list_runs(root)
    excess = runs[: max(0, len(runs) - keep)] if keep > 0 else []
    for name in excess:
        if name == current:
            continue
        shutil.rmtree(root / name, ignore_errors=True)
        removed.append(name)
    now = time.time()
    for path in root.iterdir() if root.is_dir() else []:
        if path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX) and path.is_dir():
            try:
                if now - path.stat().st_mtime > STALE_PARTIAL_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass
    return removed


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2330;max-width:72rem}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.5rem 0} th,td{border:1px solid #ccd;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f0f2f7} .pass{color:#11672c;font-weight:600} .fail{color:#b00020;font-weight:600}
.skipped,.error{color:#7a5c00;font-weight:600} code{background:#f4f4f8;padding:0 .2rem} .muted{color:#667}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:.3rem;color:#fff}
.badge.pass{background:#11672c} .badge.fail{background:#b00020} .badge.error{background:#7a5c00}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def format_value(value, missing: str = "—") -> str:
    """A report value as text: floats to 4 significant digits, `missing` for None."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{_e(title)}</title><meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def render_index(summary: dict) -> str:
    """The run's index.html: status, test table, links to the Evidently reports."""
    status = summary.get("status", "error")
    parts = [
        f'<h1>covidct monitoring <span class="badge {_e(status)}">{_e(status.upper())}</span></h1>',
        f'<p class="muted">Generated {_e(summary.get("generated_at"))}</p>',
    ]
    links = []
    for key, label in (
        ("drift_html", "Data drift report"),
        ("classification_html", "Classification quality report"),
        ("study_quality_html", "Study-level quality report"),
    ):
        name = summary.get("files", {}).get(key)
        if name:
            links.append(f'<li><a href="{_e(name)}">{_e(label)}</a> (<code>{_e(name)}</code>)</li>')
    links.append('<li><a href="summary.json">summary.json</a></li>')
    parts.append("<h2>Reports</h2><ul>" + "".join(links) + "</ul>")

    rows = []
    for test in summary.get("tests", []):
        st = test.get("status", "")
        rows.append(
            f"<tr><td><code>{_e(test.get('name'))}</code></td><td>{_e(format_value(test.get('value')))}</td>"
            f'<td>{_e(test.get("condition"))}</td><td class="{_e(st)}">{_e(st.upper())}</td>'
            f"<td>{_e(test.get('description'))}</td></tr>"
        )
    parts.append(
        "<h2>Tests</h2><table><tr><th>test</th><th>value</th><th>condition</th><th>status</th>"
        "<th>details</th></tr>" + "".join(rows) + "</table>"
    )

    window = summary.get("window") or {}
    ref = summary.get("reference", {})
    cur = summary.get("current", {})
    models = ", ".join(
        f"{m.get('model_name')} {m.get('model_version')} ({m.get('rows')} rows)" for m in cur.get("models", [])
    )
    info_rows = [
        (
            "window",
            f"{window.get('length')} ({window.get('start')} – {window.get('end')})" if window else "not applied",
        ),
        ("reference", f"{ref.get('path')} — {ref.get('rows')} rows"),
        (
            "current",
            f"{cur.get('path')} ({cur.get('kind')}) — {cur.get('rows')} rows, {cur.get('labelled_rows')} with feedback labels",
        ),
        ("models seen", models or "—"),
        (
            "refused by the out-of-distribution gate",
            f"{cur.get('refused_rows')} of {cur.get('rows')} current rows (rate "
            f"{format_value(cur.get('refusal_rate'))}, median OOD score {format_value(cur.get('ood_score_median'))}); "
            f"{ref.get('refused_rows')} of {ref.get('rows')} reference rows (rate "
            f"{format_value(ref.get('refusal_rate'))}, median OOD score {format_value(ref.get('ood_score_median'))}). "
            "Refused rows are left out of drift and classification quality.",
        ),
    ]
    parts.append(
        "<h2>Data</h2><table>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info_rows)
        + "</table>"
    )

    drift = summary.get("drift", {})
    left_out = drift.get("left_out_refused") or {}
    refused_note = (
        f" Refused rows left out: {left_out.get('current')} current, {left_out.get('reference')} reference."
        if left_out.get("current") or left_out.get("reference")
        else ""
    )
    if drift.get("status") == "run":
        drow = []
        for column, item in drift.get("per_column", {}).items():
            flag = "fail" if item.get("drifted") else "pass"
            drow.append(
                f"<tr><td><code>{_e(column)}</code></td><td>{_e(item.get('method'))}</td>"
                f"<td>{_e(format_value(item.get('score')))}</td><td>{_e(format_value(item.get('threshold')))}</td>"
                f'<td class="{flag}">{"drift" if item.get("drifted") else "no drift"}</td></tr>'
            )
        parts.append(
            f"<h2>Drift per column</h2><p>{_e(drift.get('count'))} of {len(drift.get('columns', []))} columns drifted "
            f"(share {_e(format_value(drift.get('share')))}).{_e(refused_note)}</p>"
            "<table><tr><th>column</th><th>method</th><th>score</th><th>threshold</th><th>result</th></tr>"
            + "".join(drow)
            + "</table>"
        )
    else:
        parts.append(f'<h2>Drift</h2><p class="skipped">Skipped: {_e(drift.get("reason"))}</p>')

    cls = summary.get("classification", {})
    refused_labelled = (cls.get("left_out_refused") or {}).get("current")
    refused_note = f" {refused_labelled} refused rows with feedback labels left out." if refused_labelled else ""
    if cls.get("status") == "run":
        mrow = "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(format_value(v))}</td></tr>" for k, v in cls.get("metrics", {}).items()
        )
        parts.append(
            f"<h2>Classification quality on feedback</h2><p>{_e(cls.get('rows'))} labelled rows, threshold "
            f"{_e(format_value(cls.get('probas_threshold')))}, positive class "
            f"<code>{_e(cls.get('positive_class'))}</code>.{_e(refused_note)}</p>"
            f"<table>{mrow}</table>"
        )
    else:
        parts.append(
            f'<h2>Classification quality on feedback</h2><p class="skipped">Skipped: {_e(cls.get("reason"))}</p>'
        )
    parts.append(_render_studies(summary.get("study_quality") or {}))
    notes = summary.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    mlflow = summary.get("mlflow")
    if mlflow:
        parts.append(f"<h2>MLflow</h2><p>{_e(json.dumps(mlflow))}</p>")
    return _page("covidct monitoring", "\n".join(parts))


def _render_studies(study: dict) -> str:
    """The index's section on study-level quality (verdicts of whole studies against study feedback)."""
    title = "<h2>Study-level quality on study feedback</h2>"
    counts = ""
    if study.get("tables"):
        counts = (
            f"<p>{_e(study.get('studies'))} studies in the window, {_e(study.get('without_verdict'))} without a "
            f"verdict (share {_e(format_value(study.get('without_verdict_share')))}); "
            f"{_e(study.get('labelled_studies'))} labelled studies with a verdict.</p>"
        )
    if study.get("status") != "run":
        return f'{title}{counts}<p class="skipped">Skipped: {_e(study.get("reason"))}</p>'
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(format_value(v))}</td></tr>" for k, v in study.get("metrics", {}).items()
    )
    report = study.get("report") or {}
    report_note = "" if report.get("status") == "run" else f" Evidently report skipped: {report.get('reason')}."
    return (
        f"{title}{counts}<p>Threshold {_e(format_value(study.get('probas_threshold')))}, positive class "
        f"<code>{_e(study.get('positive_class'))}</code>.{_e(report_note)}</p><table>{rows}</table>"
    )


def render_history(root: Path) -> str:
    """OUT/index.html for the run history: newest first, linking each run's index.html."""
    rows = []
    for name in reversed(list_runs(root)):
        try:
            summary = json.loads((root / name / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
        status = summary.get("status", "?")
        cur = summary.get("current", {})
        share = summary.get("drift", {}).get("share")
        refusal = cur.get("refusal_rate")
        rows.append(
            f'<tr><td><a href="{_e(name)}/index.html">{_e(name)}</a></td>'
            f'<td class="{_e(status)}">{_e(str(status).upper())}</td><td>{_e(cur.get("rows"))}</td>'
            f"<td>{_e(cur.get('labelled_rows'))}</td><td>{_e(format_value(refusal))}</td>"
            f"<td>{_e(format_value(share))}</td>"
            f"<td>{_e(', '.join(summary.get('failed_tests', [])))}</td></tr>"
        )
    body = (
        "<h1>covidct monitoring runs</h1>"
        f'<p><a href="{LATEST}/index.html">Latest report</a></p>'
        "<table><tr><th>run (UTC)</th><th>status</th><th>current rows</th><th>labelled</th>"
        "<th>refusal rate</th><th>drifted share</th><th>failed tests</th></tr>" + "".join(rows) + "</table>"
    )
    return _page("covidct monitoring runs", body)
