"""Command line: `python -m covidct_monitor report|watch ...`.

Exit codes: 0 all tests passed; 1 at least one test failed; 2 bad input (missing file, missing
column, bad option); 3 an unexpected internal error."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from . import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_TESTS_FAILED, __version__
from .data import InputError, parse_window
from .output import format_value
from .reports import Thresholds


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code for usage errors is 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _share(text):
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _unit(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _window(text):
    try:
        parse_window(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _add_common(p: argparse.ArgumentParser) -> None:
    d = Thresholds()
    io = p.add_argument_group("inputs and outputs")
    io.add_argument(
        "--reference", required=True, help="reference CSV (or Parquet) from `covidct monitor export-reference`"
    )
    io.add_argument(
        "--current",
        required=True,
        help="the service's SQLite prediction log (opened read-only), or a CSV in the reference format",
    )
    io.add_argument("--window", default="24h", type=_window, help="current window length, units s/m/h/d (default 24h)")
    io.add_argument("--now", default=None, help="end of the window: ISO 8601 time or unix ms (default: now)")
    io.add_argument(
        "--reference-split",
        action="append",
        default=[],
        metavar="SPLIT",
        help="use only reference rows of this split (repeatable; default: all rows)",
    )
    io.add_argument("--out", required=True, help="output directory")
    io.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; unset = no logging)"
    )
    io.add_argument("--experiment", default="covidct-monitoring", help="MLflow experiment (default covidct-monitoring)")
    t = p.add_argument_group("test conditions")
    t.add_argument(
        "--min-rows",
        type=_count,
        default=d.min_rows,
        help=f"fail when the window holds fewer current rows the model judged (default {d.min_rows})",
    )
    t.add_argument(
        "--max-refusal-rate",
        type=_unit,
        default=d.max_refusal_rate,
        help="fail when the share of current rows refused by the out-of-distribution gate is above "
        f"this (default {d.max_refusal_rate})",
    )
    t.add_argument(
        "--max-drift-share",
        type=_share,
        default=d.max_drift_share,
        help=f"fail when the share of drifted columns is >= this (default {d.max_drift_share})",
    )
    t.add_argument(
        "--drift-method",
        default=d.drift_method,
        help="Evidently drift method for every column (default: Evidently's choice: K-S for a reference "
        "of <= 1000 rows, normed Wasserstein above)",
    )
    t.add_argument(
        "--drift-threshold",
        type=_positive_float,
        default=d.drift_threshold,
        help="drift threshold of the method for every column (default: the method's own, 0.05 p-value "
        "for K-S, 0.1 for Wasserstein)",
    )
    t.add_argument(
        "--probability-drift-threshold",
        type=_positive_float,
        default=d.probability_drift_threshold,
        help="drift threshold for the probability column only (default: as --drift-threshold)",
    )
    t.add_argument(
        "--min-labelled-rows",
        type=_count,
        default=d.min_labelled_rows,
        help=f"run the classification report only with this many feedback labels (default {d.min_labelled_rows})",
    )
    t.add_argument(
        "--min-accuracy",
        type=_unit,
        default=d.min_accuracy,
        help=f"fail when accuracy on feedback-labelled rows is below (default {d.min_accuracy})",
    )
    t.add_argument(
        "--min-roc-auc",
        type=_unit,
        default=d.min_roc_auc,
        help=f"fail when ROC-AUC on feedback-labelled rows is below (default {d.min_roc_auc})",
    )
    t.add_argument(
        "--min-labelled-studies",
        type=_count,
        default=d.min_labelled_studies,
        help="run study-level quality only with this many studies that have a verdict and study "
        f"feedback (default {d.min_labelled_studies})",
    )
    t.add_argument(
        "--min-study-accuracy",
        type=_unit,
        default=d.min_study_accuracy,
        help="fail when the accuracy of the study verdicts on labelled studies is below "
        f"(default {d.min_study_accuracy})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m covidct_monitor", description="Evidently monitoring of the covidct service.")
    parser.add_argument("--version", action="version", version=f"covidct_monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    report = sub.add_parser("report", help="one run: reports into --out, exit 0 pass / 1 fail / 2 bad input")
    _add_common(report)
    report.add_argument(
        "--history",
        action="store_true",
        help="write into OUT/<UTC timestamp>/ and point OUT/latest at it (as one watch iteration)",
    )
    report.add_argument("--keep", type=_count, default=48, help="with --history: runs to keep (default 48)")
    watch = sub.add_parser("watch", help="run the report every --interval into OUT/<UTC timestamp>/, OUT/latest")
    _add_common(watch)
    watch.add_argument("--interval", default="1h", type=_window, help="time between runs (default 1h)")
    watch.add_argument("--keep", type=_count, default=48, help="run directories to keep (default 48)")
    watch.add_argument("--max-runs", type=_count, default=None, help=argparse.SUPPRESS)  # for tests
    return parser


def _options(args):
    from .runner import Options

    return Options(
        reference=args.reference,
        current=args.current,
        window=args.window,
        now=args.now,
        reference_split=args.reference_split,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        thresholds=Thresholds(
            min_rows=args.min_rows,
            max_refusal_rate=args.max_refusal_rate,
            max_drift_share=args.max_drift_share,
            drift_method=args.drift_method,
            drift_threshold=args.drift_threshold,
            probability_drift_threshold=args.probability_drift_threshold,
            min_labelled_rows=args.min_labelled_rows,
            min_accuracy=args.min_accuracy,
            min_roc_auc=args.min_roc_auc,
            min_labelled_studies=args.min_labelled_studies,
            min_study_accuracy=args.min_study_accuracy,
        ),
    )


def _print_summary(summary: dict, out_dir: Path) -> None:
    cur = summary["current"]
    print(
        f"covidct_monitor: {cur['rows']} current rows ({cur['refused_rows']} refused, {cur['labelled_rows']} "
        f"labelled) vs {summary['reference']['rows']} reference rows; window "
        f"{(summary.get('window') or {}).get('length', 'not applied')}"
    )
    studies = summary.get("study_quality") or {}
    if studies.get("tables"):
        print(
            f"  studies: {studies['studies']} in the window ({studies['without_verdict']} without a verdict), "
            f"{studies['labelled_studies']} labelled with a verdict; {cur.get('study_rows', 0)} of the current rows "
            "are slices of studies"
        )
    for test in summary["tests"]:
        if test["status"] == "skipped":
            print(f"  SKIPPED {test['name']}: {test['description']}")
            continue
        line = f"  {test['status'].upper():7} {test['name']} = {format_value(test['value'], missing='-')}"
        if test["condition"]:
            line += f" (condition: {test['condition']})"
        print(line)
    for note in summary.get("notes", []):
        print(f"  note: {note}")
    print(f"status: {summary['status']}; report: {out_dir / 'index.html'}")
    sys.stdout.flush()
    for test in summary["tests"]:
        if test["status"] == "fail":
            print(
                f"FAIL {test['name']} = {format_value(test['value'], missing='-')} (condition: {test['condition']}): {test['description']}",
                file=sys.stderr,
            )


def _warn_tracking(outcome) -> None:
    if outcome and outcome.get("status") != "logged":
        print(f"warning: MLflow logging failed ({outcome.get('error')}); the report files are written", file=sys.stderr)
    elif outcome:
        print(f"MLflow run {outcome['run_id']} in experiment {outcome['experiment']}")


def cmd_report(args) -> int:
    from .runner import log_to_mlflow, run_into_history, run_report

    opts = _options(args)
    if args.history:
        summary, out_dir = run_into_history(opts, Path(args.out), args.keep)
    else:
        out_dir = Path(args.out)
        summary = run_report(opts, out_dir)
    _print_summary(summary, out_dir)
    _warn_tracking(log_to_mlflow(opts, out_dir, summary))
    return EXIT_OK if summary["status"] == "pass" else EXIT_TESTS_FAILED


def _log_line(**fields) -> None:
    fields = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"), **fields}
    print(json.dumps(fields, default=str), flush=True)


def cmd_watch(args) -> int:
    from .runner import log_to_mlflow, run_into_history

    opts = _options(args)
    interval = parse_window(args.interval)
    stop = threading.Event()

    def _handle(signum, _frame):
        if stop.is_set():  # a second signal: stop now
            raise SystemExit(128 + signum)
        stop.set()
        _log_line(event="monitoring_stop", signal=signal.Signals(signum).name)

    previous = {s: signal.signal(s, _handle) for s in (signal.SIGTERM, signal.SIGINT)}
    _log_line(event="monitoring_start", interval=args.interval, window=args.window, out=args.out, keep=args.keep)
    runs = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                summary, run_dir = run_into_history(opts, Path(args.out), args.keep)
            except (InputError, OSError) as err:
                if runs == 0:  # misconfigured: fail fast
                    print(f"error: {err}", file=sys.stderr)
                    return EXIT_BAD_INPUT
                _log_line(event="monitoring_run", status="error", error=str(err))
            except Exception as err:
                if runs == 0:
                    raise
                traceback.print_exc()
                _log_line(event="monitoring_run", status="error", error=f"{type(err).__name__}: {err}")
            else:
                outcome = log_to_mlflow(opts, run_dir, summary)
                _log_line(
                    event="monitoring_run",
                    status=summary["status"],
                    run=run_dir.name,
                    current_rows=summary["current"]["rows"],
                    labelled_rows=summary["current"]["labelled_rows"],
                    labelled_studies=summary.get("study_quality", {}).get("labelled_studies"),
                    refusal_rate=summary["current"]["refusal_rate"],
                    drift_share=summary.get("drift", {}).get("share"),
                    failed_tests=summary["failed_tests"],
                    mlflow=(outcome or {}).get("status", "off"),
                    duration_s=round(time.monotonic() - started, 2),
                )
                if outcome and outcome.get("status") != "logged":
                    print(f"warning: MLflow logging failed: {outcome.get('error')}", file=sys.stderr)
            runs += 1
            if args.max_runs is not None and runs >= args.max_runs:
                break
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _log_line(event="monitoring_exit", runs=runs)
    return EXIT_OK


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return cmd_report(args)
        return cmd_watch(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        # Output directory not writable, a `latest` that is not a symlink, a full disk...
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("error: internal error in covidct_monitor (above); please report it", file=sys.stderr)
        return EXIT_INTERNAL
