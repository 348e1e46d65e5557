"""Black-box tests of `covidct data inspect` and `covidct data split`."""

import csv
import json

import pytest

from conftest import SHARED_DATASET, write_image


def test_inspect_json_counts_layouts_and_bad_files(run, small_dataset):
    write_image(small_dataset / "COVID" / "rgba.png", "RGBA", 10)
    (small_dataset / "non-COVID" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    (small_dataset / "non-COVID" / "notes.txt").write_text("not an image")
    result = run("data", "inspect", "--json", small_dataset, check=True)
    report = json.loads(result.stdout)
    assert report["total_images"] == 31
    covid = next(c for c in report["classes"] if c["name"] == "COVID")
    assert covid["layouts"] == {"PNG grey 8-bit": 15, "PNG RGBA 8-bit": 1}
    invalid = report["invalid_files"]
    assert len(invalid) == 1 and invalid[0]["path"].endswith("broken.png")
    assert any(s["path"].endswith("notes.txt") for s in report["skipped"])


def test_split_writes_a_leak_free_manifest(run, small_dataset, tmp_path):
    out = tmp_path / "split.csv"
    run("data", "split", small_dataset, "--out", out, "--ratios", "60,20,20", check=True)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    assert set(rows[0]) == {"path", "label", "group", "split"}
    split_of_group = {}
    for row in rows:
        assert split_of_group.setdefault(row["group"], row["split"]) == row["split"]
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    # Deterministic: the same seed writes the same bytes.
    again = tmp_path / "again.csv"
    run("data", "split", small_dataset, "--out", again, "--ratios", "60,20,20", check=True)
    assert out.read_bytes() == again.read_bytes()


def test_user_manifest_with_leaking_groups_is_refused(run, small_dataset, tmp_path):
    groups = tmp_path / "patients.csv"
    rows = ["path,patient_id,split"]
    for n in range(1, 16):
        for label in ("COVID", "non-COVID"):
            split = "test" if (label, n) == ("COVID", 2) else "train"
            rows.append(f"{label}/{label} ({n}).png,{label}-p{(n - 1) // 5},{split}")
    groups.write_text("\n".join(rows) + "\n")
    result = run(
        "data",
        "split",
        small_dataset,
        "--out",
        tmp_path / "s.csv",
        "--strategy",
        "manifest",
        "--groups-csv",
        groups,
        "--group-column",
        "patient_id",
    )
    assert result.returncode != 0
    assert "COVID-p0" in result.stderr and "two splits" in result.stderr
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.skipif(not SHARED_DATASET.is_dir(), reason=f"{SHARED_DATASET} is absent")
def test_shared_dataset_inspect_finds_counts_and_duplicates(run):
    report = json.loads(run("data", "inspect", "--json", SHARED_DATASET, check=True).stdout)
    assert [(c["name"], c["images"]) for c in report["classes"]] == [("COVID", 1252), ("non-COVID", 1229)]
    assert [d["paths"] for d in report["exact_duplicates"]] == [
        ["COVID/Covid (128).png", "COVID/Covid (129).png"],
        ["COVID/Covid (134).png", "COVID/Covid (135).png"],
    ]


def test_presplit_folders_are_kept(run, tmp_path):
    root = tmp_path / "presplit"
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for label in ("cat", "dog"):
            for n in range(count):
                write_image(root / split / label / f"{n}.png", "L", 40 * n + (label == "dog") * 100)
    out = tmp_path / "split.csv"
    run("data", "split", root, "--strategy", "folders", "--out", out, check=True)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20
    for row in rows:
        assert row["path"].split("/")[0] == row["split"], row
        assert row["path"].split("/")[1] == row["label"], row


def test_flat_dataset_refuses_folders_strategy(run, small_dataset, tmp_path):
    result = run("data", "split", small_dataset, "--strategy", "folders", "--out", tmp_path / "s.csv")
    assert result.returncode != 0
    assert "train/ val/ test/" in result.stderr
