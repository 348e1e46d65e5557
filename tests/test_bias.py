"""Black-box tests of `covidct evaluate --bias` and `covidct data shortcut` on generated images.

Both classes hold the same kind of content (discs and bars drawn at random, random sizes), so
nothing but what a test adds tells the classes apart: saving one class as RGB PNG and the other
as grey PNG is a layout shortcut, like the RGB/RGBA split of the original Kaggle files.
"""

import json
import random

import pytest

from conftest import shape_image

GRAD_CAM_IMAGES = 12


def mixed_shapes(base, rgb_class=None, per_class=60, seed=11):
    """Writes base/data/{COVID,non-COVID}/ with random discs and bars of random sizes (the
    images of `rgb_class` saved as RGB, the others grey) and base/split.csv: groups of 4
    consecutive numbers, alternately train and test. Returns (data dir, manifest)."""
    rng = random.Random(seed)
    root = base / "data"
    rows = ["path,label,group,split"]
    for label in ("COVID", "non-COVID"):
        (root / label).mkdir(parents=True)
        for n in range(per_class):
            image = shape_image(
                rng.choice((40, 48, 56)), rng.randrange(0, 150), rng.random() < 0.5, rng.randrange(-2, 3), rng
            )
            name = f"{label} ({n + 1}).png"
            (image.convert("RGB") if label == rgb_class else image).save(root / label / name)
            rows.append(f"{label}/{name},{label},{label}-{n // 4},{'test' if n // 4 % 2 else 'train'}")
    manifest = base / "split.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return root, manifest


def evaluate_bias(run, model_package, data, manifest, out):
    result = run(
        "evaluate",
        "--model",
        model_package,
        "--data-dir",
        data,
        "--manifest",
        manifest,
        "--split",
        "test",
        "--bootstrap",
        "50",
        "--bias",
        "--attribution-max-images",
        GRAD_CAM_IMAGES,
        "--out",
        out,
        check=True,
    )
    report = json.loads((out / "report.json").read_text())
    sections = {s["title"].split(" (")[0]: s["content"] for s in report["extra"]}
    return result, report, sections


def check_subgroups_and_attribution(sections):
    rows = sections["Bias: metrics per subgroup"]
    assert {r["property"] for r in rows} == {
        "resolution (short side, px)",
        "aspect",
        "mean intensity",
        "original layout",
    }
    for row in rows:
        assert row["status"] in ("ok", "flagged", "too_small")
        assert row["accuracy_ci_lower"] <= row["accuracy"] <= row["accuracy_ci_upper"], row
        assert 0 < row["n"] and 0 <= row["positives"] <= row["n"]
    # The four intensity quartiles cover every image once.
    assert sum(r["n"] for r in rows if r["property"] == "mean intensity") == sum(
        r["n"] for r in rows if r["property"] == "aspect"
    )
    attribution = {r["images"]: r for r in sections["Bias: Grad-CAM attribution inside the body"]}
    assert attribution["all"]["explained"] == GRAD_CAM_IMAGES
    assert attribution["COVID"]["explained"] + attribution["non-COVID"]["explained"] == GRAD_CAM_IMAGES
    for row in attribution.values():
        for key in ("mean_inside", "median_inside", "p10_inside", "share_below_half"):
            assert row[key] is None or 0.0 <= row[key] <= 1.0, row
    assert attribution["all"]["explained"] > attribution["all"]["undefined"]


def test_a_layout_shortcut_is_reported_with_layout_named(run, model_package, tmp_path):
    data, manifest = mixed_shapes(tmp_path, rgb_class="COVID")
    result, _, sections = evaluate_bias(run, model_package, data, manifest, tmp_path / "eval")
    shortcut = {r["scope"]: r for r in sections["Bias: shortcut test"]}
    assert set(shortcut) == {"evaluated images", "whole manifest"}
    assert shortcut["whole manifest"]["images"] == 120 and shortcut["evaluated images"]["images"] == 56
    for row in shortcut.values():
        assert row["verdict"] == "shortcut", row
        assert row["cv_roc_auc"] >= 0.99 and row["layout alone"] >= 0.99, row
        assert "layout alone" in row["summary"]
    layouts = {r["value"]: r for r in sections["Bias: metrics per subgroup"] if r["property"] == "original layout"}
    assert set(layouts) == {"PNG RGB 8-bit", "PNG grey 8-bit"}
    assert layouts["PNG RGB 8-bit"]["positives"] == layouts["PNG RGB 8-bit"]["n"] == 28
    check_subgroups_and_attribution(sections)
    assert "SHORTCUT" in result.stdout and "layout alone" in result.stdout
    assert "Grad-CAM inside the body" in result.stdout
    assert "Bias: shortcut test" in (tmp_path / "eval" / "report.html").read_text()
    # Tracked in the evaluate run (local MLflow file store of the working folder).
    store = tmp_path / "cwd" / "mlruns"
    (verdict,) = store.glob("*/*/tags/covidct.shortcut_verdict")
    assert verdict.read_text() == "shortcut"
    for metric in ("shortcut_cv_roc_auc", "shortcut_manifest_cv_roc_auc", "bias_flagged_subgroups"):
        assert list(store.glob(f"*/*/metrics/{metric}")), metric


def test_without_a_shortcut_the_verdict_says_so(run, model_package, tmp_path):
    data, manifest = mixed_shapes(tmp_path)
    result, _, sections = evaluate_bias(run, model_package, data, manifest, tmp_path / "eval")
    for row in sections["Bias: shortcut test"]:
        assert row["verdict"] == "no_shortcut", row
        assert row["cv_roc_auc"] < 0.75
    assert "no shortcut" in result.stdout and "SHORTCUT" not in result.stdout
    check_subgroups_and_attribution(sections)


@pytest.mark.parametrize("rgb_class, verdict, status", [("COVID", "shortcut", 3), (None, "no_shortcut", 0)])
def test_data_shortcut_needs_no_model(run, tmp_path, rgb_class, verdict, status):
    data, manifest = mixed_shapes(tmp_path, rgb_class=rgb_class)
    result = run("data", "shortcut", data, "--manifest", manifest, "--json", "--deny-shortcut")
    assert result.returncode == status, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == verdict and report["n"] == 120 and report["groups"] == 30
    features = {f["feature"]: f["cv_roc_auc"] for f in report["features"]}
    assert set(features) == {"width", "height", "aspect", "file size", "bytes per pixel", "layout"}
    if rgb_class:
        assert features["layout"] >= 0.99


def test_data_shortcut_names_a_missing_positive_class(run, tmp_path):
    data, manifest = mixed_shapes(tmp_path, per_class=8)
    result = run("data", "shortcut", data, "--manifest", manifest, "--positive-class", "pneumonia")
    assert result.returncode != 0 and "pneumonia" in result.stderr


def test_attribution_limit_needs_bias(run, model_package, tmp_path):
    data, manifest = mixed_shapes(tmp_path, per_class=8)
    result = run(
        "evaluate",
        "--model",
        model_package,
        "--data-dir",
        data,
        "--manifest",
        manifest,
        "--attribution-max-images",
        "3",
        "--out",
        tmp_path / "eval",
    )
    assert result.returncode != 0 and "--bias" in result.stderr
