"""Black-box tests of `covidct evaluate --robustness` on the session's tiny model (ResNet-18 at
32 px, generated discs and bars): the report sections and curves, the MLflow metrics, the
printed table, and the refusal of bad flags."""

import json

KINDS = ["noise", "blur", "contrast", "gamma", "jpeg", "downscale", "rotation", "translation", "crop"]
# The 2 of the 4 default severities `--robustness-severities 2` picks (the 2nd and the 4th).
PICKED = {
    "noise": [8, 32],
    "blur": [1, 4],
    "contrast": [0.6, 0.2],
    "gamma": [1.5, 3],
    "jpeg": [50, 10],
    "downscale": [0.5, 0.25],
    "rotation": [5, 20],
    "translation": [0.05, 0.2],
    "crop": [0.9, 0.7],
}


def table(section):
    """A header-row table section as a list of dicts."""
    header, *rows = section["content"]
    return [dict(zip(header, row)) for row in rows]


def test_robustness_adds_tables_curves_and_tracked_metrics(run, model_package, tmp_path):
    data = model_package.parent.parent / "data"
    out = tmp_path / "eval"
    result = run(
        "evaluate",
        "--model",
        model_package,
        "--data-dir",
        data,
        "--bootstrap",
        "20",
        "--out",
        out,
        "--robustness",
        "--robustness-severities",
        "2",
        "--robustness-max-images",
        "16",
        check=True,
    )
    assert "9 perturbation(s), 18 severities + the clean pass over 16 of 80 images = 304 images" in result.stderr
    report = json.loads((out / "report.json").read_text())
    summary, levels = report["extra"][-2:]
    assert summary["title"].startswith("Robustness to perturbations (16 images; clean accuracy")

    rows = table(summary)
    assert [r["perturbation"] for r in rows] == KINDS
    verdict = "loses > 5 points of accuracy at"
    for r in rows:
        picked = PICKED[r["perturbation"]]
        assert r["levels 1…"] == ", ".join(str(v) for v in picked)
        assert r[verdict] == f"none up to {picked[-1]}" or float(r[verdict]) in picked, r
        assert (r[verdict].startswith("none")) == (r["largest loss (points)"] <= 5), r

    every = table(levels)
    assert len(every) == 9 * 2
    for kind in KINDS:
        mine = [r for r in every if r["perturbation"] == kind]
        assert [r["level"] for r in mine] == [1, 2]
        assert [r["severity"] for r in mine] == PICKED[kind]
        for r in mine:
            assert 0 <= r["accuracy"] <= 1 and 0 <= r["roc_auc"] <= 1
            assert -1 <= r["accuracy_drop"] <= 1
    # The strongest perturbations must hurt a model of discs and bars: a 0.2 contrast factor or
    # a 20% shift does not leave every prediction intact.
    assert max(r["accuracy_drop"] for r in every) > 0

    files = {p["file"] for p in summary["plots"]}
    assert files == {"robustness_accuracy.png", "robustness_roc_auc.png"}
    for name in files:
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 + 2
    assert "<h2>Robustness: every severity</h2>" in html

    assert "loses > 5 points of accuracy at:" in result.stdout
    for kind in KINDS:
        assert f"\n  {kind} " in result.stdout

    (run_dir,) = (tmp_path / "cwd" / "mlruns").glob("*/*/metrics/robustness_noise_accuracy")
    steps = [int(line.split()[2]) for line in run_dir.read_text().splitlines()]
    assert steps == [0, 1, 2]
    params = run_dir.parent.parent / "params"
    assert (params / "robustness.noise.severities").read_text().strip() == "8, 32"
    assert (params / "robustness.crop.accuracy_drop_severity").read_text().strip() == rows[-1][verdict]
    assert (run_dir.parent / "robustness_jpeg_roc_auc").is_file()


def test_bad_robustness_flags_are_refused_clearly(run, model_package, tmp_path):
    data = model_package.parent.parent / "data"
    base = ["evaluate", "--model", model_package, "--data-dir", data, "--out", tmp_path / "eval"]
    cases = [
        (
            ["--robustness", "--robustness-kinds", "noise,bogus"],
            ["unknown perturbation `bogus`", "noise, blur, contrast"],
        ),
        (["--robustness-max-images", "10"], ["--robustness"]),
        (["--robustness", "--robustness-severities", "0"], ["--robustness-severities"]),
        (["--robustness", "--robustness-max-images", "1"], ["--robustness-max-images"]),
    ]
    for flags, expected in cases:
        result = run(*base, *flags)
        assert result.returncode not in (0, 101), (flags, result.returncode)
        for text in expected:
            assert text in result.stderr, (flags, result.stderr)
        assert "panicked" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "eval").exists()
