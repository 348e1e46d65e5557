"""Study-level prediction, black-box: `POST /v1/predict/study` and `covidct predict --study` on the
real binary with the session model (tests/conftest.py), whose package holds a study (group) rule
fitted on its pseudo-patients.

The study probability is recomputed here from the slices' probabilities and the package's rule,
temperature and threshold, read from the package file itself (its documented layout: magic,
format version, length-prefixed metadata JSON; crates/model/src/package.rs) — `GET /v1/model`
does not show the rule. Every image is generated or a training slice of the session model."""

import base64
import io
import json
import math
import random
import re
import sqlite3
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import clean_env
from test_serve import Server, dicom, multipart, training_slice

POSITIVE = "COVID"
# The same slices score the same in another request, route or process (the CPU forward pass does
# not depend on how the micro-batcher groups them); within one answer the rule is exact.
SAME = 1e-7


# ---- The package's study rule, and the verdict recomputed from it ---------------------------


def package_metadata(package: Path) -> dict:
    """The metadata JSON of a `.ctpkg` file: "COVIDCT-PKG\\0", u32 version, u64 length, JSON."""
    with open(package, "rb") as f:
        assert f.read(12) == b"COVIDCT-PKG\0"
        (version,) = struct.unpack("<I", f.read(4))
        assert version == 1, version
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


@pytest.fixture(scope="module")
def group(model_package):
    """The package's group calibration: {rule, temperature, threshold, ...}."""
    metadata = package_metadata(model_package)
    assert metadata.get("group"), "the session model was trained with pseudo-patients: it needs a study rule"
    return metadata["group"]


FLOOR = 1e-6


def clamped_logit(p):
    p = min(max(p, FLOOR), 1 - FLOOR)
    return math.log(p / (1 - p))


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def aggregate(rule, probabilities):
    """crates/evaluation/src/group.rs: GroupRule::aggregate, written again."""
    n = len(probabilities)
    if rule == "mean":
        return sum(probabilities) / n
    if rule == "max":
        return max(probabilities)
    if rule == "mean-logit":
        return sigmoid(sum(clamped_logit(p) for p in probabilities) / n)
    if rule == "noisy-or":
        return 1 - math.exp(sum(math.log(1 - min(max(p, FLOOR), 1 - FLOOR)) for p in probabilities))
    fraction = float(re.fullmatch(r"top-mean:(.+)", rule).group(1))
    keep = min(max(math.ceil(n * fraction), 1), n)
    return sum(sorted(probabilities, reverse=True)[:keep]) / keep


def study_probability(group, probabilities):
    return sigmoid(clamped_logit(aggregate(group["rule"], probabilities)) / group["temperature"])


def expected_drivers(group, study, positive):
    """Positions of the most positive usable slices of a positive study (the least positive of a
    negative one); a positive top-mean study names only the slices its mean took."""
    usable = [(s["position"], s["probability"]) for s in study["slices"] if s["in_distribution"]]
    ranked = sorted(usable, key=lambda x: -x[1] if positive else x[1])
    keep = len(ranked)
    if positive and group["rule"].startswith("top-mean:"):
        keep = max(math.ceil(len(ranked) * float(group["rule"].split(":")[1])), 1)
    return [position for position, _ in ranked[: min(keep, 3)]]


def check_verdict(group, study):
    """The study's verdict is the package rule applied to its usable slices, in order."""
    usable = [s["probability"] for s in study["slices"] if s["in_distribution"]]
    assert study["slices_used"] == len(usable)
    assert study["slices_refused"] == len(study["slices"]) - len(usable)
    assert study["slices_total"] == len(study["slices"])
    assert [s["position"] for s in study["slices"]] == list(range(len(study["slices"])))
    assert study["rule"] == group["rule"]
    assert abs(study["threshold"] - group["threshold"]) < 1e-12
    assert study["label"] is not None, study["reason"]
    expected = study_probability(group, usable)
    assert abs(study["probability"] - expected) < 1e-9, (study["probability"], expected)
    positive = study["probability"] >= study["threshold"]
    assert study["label"] == (POSITIVE if positive else "non-COVID")
    assert study["reason"] is None
    assert study["drivers"] == expected_drivers(group, study, positive)


# ---- Inputs ---------------------------------------------------------------------------------


def png_of(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


# Four training slices under names whose natural order (s1, s2, s3, s10) differs from both the
# upload order and plain string order.
SLICES = [("s10.png", ("COVID", 9)), ("s2.png", ("non-COVID", 6)), ("s1.png", ("COVID", 5)), ("s3.png", ("COVID", 13))]
NATURAL = ["s1.png", "s2.png", "s3.png", "s10.png"]


def slice_files(slices=SLICES):
    return [(name, png_of(training_slice(*which))) for name, which in slices]


def blank_png(side=64):
    return png_of(Image.new("L", (side, side), 0))


def noise_png(side=64, seed=3):
    rng = random.Random(seed)
    image = Image.new("L", (side, side))
    image.putdata([rng.randrange(256) for _ in range(side * side)])
    return png_of(image)


def zip_of(files, deflate=True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        for name, data in files:
            z.writestr(name, data)
    return out.getvalue()


def json_body(files):
    return json.dumps(
        {"images": [{"image": base64.b64encode(data).decode(), "filename": name} for name, data in files]}
    )


def post_study(server, files=None, query="", body=None, content_type=None):
    if body is None:
        body, content_type = multipart(files)
    return server.json("POST", "/v1/predict/study" + query, body, content_type, timeout=120)


# Two series of one study and a third study, positions written out of order (z in mm): the
# service must order each series by ImagePositionPatient along the slice normal, not by file
# name or InstanceNumber.
AXIAL = [1, 0, 0, 0, 1, 0]
SERIES = {
    "1.2.826.0.1.3680043.2.1125.1.1": ("1.2.826.0.1.3680043.2.1125.1", [30.0, -12.5, 10.0, 2.5]),
    "1.2.826.0.1.3680043.2.1125.1.2": ("1.2.826.0.1.3680043.2.1125.1", [-40.0, 5.0, -20.0]),
}


def dicom_series():
    """Files (name, bytes, series uid, z) of the SERIES, named and numbered against their
    position so that neither order matches it; each slice shows a training slice."""
    files = []
    for s, (series_uid, (study_uid, zs)) in enumerate(SERIES.items()):
        for k, z in enumerate(zs):
            image = training_slice("COVID" if s == 0 else "non-COVID", 5 + k)
            data = dicom(
                image,
                study_uid=study_uid,
                series_uid=series_uid,
                instance=len(zs) - k,
                position=[-120.0, -80.0, z],
                orientation=AXIAL,
            )
            files.append((f"IM{s}{k:02d}.dcm", data, series_uid, z))
    # Interleave the series in the request.
    return files[::2] + files[1::2]


# ---- The service ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(covidct_bin, model_package, tmp_path_factory):
    s = Server(covidct_bin, model_package, tmp_path_factory.mktemp("study"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference(service):
    """The study of SLICES as multipart files."""
    status, answer = post_study(service, slice_files())
    assert status == 200, answer
    return answer


def test_a_study_gets_the_package_rule_verdict_with_slices_in_natural_name_order(service, reference, group):
    answer = reference
    assert answer["slices_received"] == 4 and answer["unreadable"] == []
    assert answer["positive_class"] == POSITIVE
    assert answer["model"]["name"] and answer["model"]["version"]
    assert (
        all(answer["timing"][k] >= 0 for k in ("read_ms", "decode_ms", "inference_ms"))
        and answer["timing"]["total_ms"] > 0
    )
    (study,) = answer["studies"]
    assert study["study_id"] == answer["request_id"]
    assert study["ordered_by"] == "file_name"
    assert study["study_instance_uid"] is None and study["series_instance_uid"] is None
    assert [s["filename"] for s in study["slices"]] == NATURAL
    # index: the file's place in the request.
    uploaded = [name for name, _ in SLICES]
    assert [s["index"] for s in study["slices"]] == [uploaded.index(n) for n in NATURAL]
    assert all(s["in_distribution"] and s["ood"]["in_distribution"] for s in study["slices"])
    assert [s["request_id"] for s in study["slices"]] == [f"{study['study_id']}-{p}" for p in range(4)]
    assert study["slices_total"] == 4 and study["slices_used"] == 4 and study["slices_refused"] == 0
    check_verdict(group, study)
    assert "explanation" not in study


def test_each_slice_scores_as_it_does_alone(service, reference):
    (study,) = reference["studies"]
    files = dict(slice_files())
    for s in study["slices"]:
        status, alone = service.json("POST", "/v1/predict", files[s["filename"]], "image/png")
        assert status == 200, alone
        assert abs(alone["probability"] - s["probability"]) < SAME, (
            s["filename"],
            alone["probability"],
            s["probability"],
        )


@pytest.mark.parametrize("form", ["multipart-zip", "raw-zip", "raw-zip-stored", "json", "json-zip"])
def test_every_input_form_gives_the_same_study(service, reference, group, form):
    files = slice_files()
    if form == "multipart-zip":
        body, content_type = multipart([("study.zip", zip_of(files))])
    elif form in ("raw-zip", "raw-zip-stored"):
        body, content_type = zip_of(files, deflate=form == "raw-zip"), "application/zip"
    elif form == "json":
        body, content_type = json_body(files), "application/json"
    else:
        body, content_type = json_body([("scan.zip", zip_of(files))]), "application/json"
    status, answer = post_study(service, body=body, content_type=content_type)
    assert status == 200, answer
    assert answer["slices_received"] == 4
    (study,) = answer["studies"]
    (expected,) = reference["studies"]
    assert [s["filename"] for s in study["slices"]] == NATURAL
    for got, want in zip(study["slices"], expected["slices"]):
        assert abs(got["probability"] - want["probability"]) < SAME
    assert abs(study["probability"] - expected["probability"]) < SAME
    assert study["label"] == expected["label"] and study["drivers"] == expected["drivers"]
    check_verdict(group, study)


def test_explain_adds_the_grad_cam_of_the_top_driver(service):
    status, answer = post_study(service, slice_files(), "?explain=true")
    assert status == 200, answer
    (study,) = answer["studies"]
    explanation = study["explanation"]
    assert explanation["position"] == study["drivers"][0]
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png_base64"])))
    assert overlay.size == (384, 384) and overlay.mode == "RGB"


def test_mixed_dicom_series_are_refused_unless_split_then_ordered_by_position(service, group):
    files = dicom_series()
    upload = [(name, data) for name, data, _, _ in files]
    status, answer = post_study(service, upload)
    assert (status, answer["error"]["code"]) == (422, "mixed_studies"), answer
    message = answer["error"]["message"]
    for series_uid, (study_uid, zs) in SERIES.items():
        assert f"study {study_uid} series {series_uid} ({len(zs)} slices)" in message, message

    status, answer = post_study(service, upload, "?split=true")
    assert status == 200, answer
    assert answer["slices_received"] == len(files)
    studies = answer["studies"]
    # One study per series, in order of first appearance in the request.
    assert [s["series_instance_uid"] for s in studies] == list(dict.fromkeys(uid for _, _, uid, _ in files))
    assert len({s["study_id"] for s in studies}) == 2
    assert all(s["study_id"].startswith(answer["request_id"]) for s in studies)
    for study in studies:
        study_uid, zs = SERIES[study["series_instance_uid"]]
        assert study["study_instance_uid"] == study_uid
        assert study["ordered_by"] == "position"
        assert [s["location_mm"] for s in study["slices"]] == sorted(zs)
        by_z = sorted((z, name) for name, _, uid, z in files if uid == study["series_instance_uid"])
        assert [s["filename"] for s in study["slices"]] == [name for _, name in by_z]
        # InstanceNumbers were written against the file order: reported, not used for ordering.
        assert all(isinstance(s["instance_number"], int) for s in study["slices"])
        check_verdict(group, study)


def test_a_series_without_positions_is_ordered_by_instance_number(service):
    uid = "1.2.826.0.1.3680043.2.1125.9"
    numbers = [3, 1, 4, 2]
    upload = [
        (f"a{k}.dcm", dicom(training_slice("COVID", 5 + k), study_uid=uid, series_uid=uid + ".1", instance=n))
        for k, n in enumerate(numbers)
    ]
    status, answer = post_study(service, upload)
    assert status == 200, answer
    (study,) = answer["studies"]
    assert study["ordered_by"] == "instance_number"
    assert [s["instance_number"] for s in study["slices"]] == sorted(numbers)
    assert all("location_mm" not in s for s in study["slices"])


def test_refused_slices_are_reported_and_left_out_of_the_score(service, reference, group):
    files = slice_files() + [("s4.png", blank_png()), ("s5.png", noise_png())]
    status, answer = post_study(service, files)
    assert status == 200, answer
    (study,) = answer["studies"]
    assert study["slices_total"] == 6 and study["slices_used"] == 4 and study["slices_refused"] == 2
    refused = [s for s in study["slices"] if not s["in_distribution"]]
    assert [s["filename"] for s in refused] == ["s4.png", "s5.png"]
    for s in refused:
        assert s["probability"] is None
        assert s["ood"]["in_distribution"] is False and s["ood"]["refusals"]
    assert refused[0]["ood"]["refusals"][0]["check"] and any(
        r["check"] == "intensity_std" for r in refused[0]["ood"]["refusals"]
    )
    # The four usable slices score the study exactly as they do alone.
    (alone,) = reference["studies"]
    assert abs(study["probability"] - alone["probability"]) < SAME
    check_verdict(group, study)
    assert not set(study["drivers"]) & {s["position"] for s in refused}


def test_a_mostly_refused_study_gets_no_verdict_and_says_why(service):
    files = [("s1.png", png_of(training_slice("COVID", 5)))] + [
        (f"s{k}.png", blank_png(48 + 8 * k)) for k in range(2, 5)
    ]
    status, answer = post_study(service, files)
    assert status == 200, answer
    (study,) = answer["studies"]
    assert study["label"] is None and study["probability"] is None and study["drivers"] == []
    assert study["slices_used"] == 1 and study["slices_refused"] == 3
    assert "1 of 4 decoded slices are usable" in study["reason"], study["reason"]
    # The threshold and rule are still shown (the package has them).
    assert study["threshold"] is not None and study["rule"]


def test_unreadable_files_are_reported_and_left_out(service, reference):
    files = slice_files() + [("broken.png", b"not an image at all")]
    status, answer = post_study(service, files)
    assert status == 200, answer
    assert answer["slices_received"] == 5
    assert answer["unreadable"] == [{"index": 4, "filename": "broken.png", "error": answer["unreadable"][0]["error"]}]
    assert answer["unreadable"][0]["error"]["code"] == "invalid_image"
    (study,) = answer["studies"]
    assert study["slices_total"] == 4
    assert abs(study["probability"] - reference["studies"][0]["probability"]) < SAME


@pytest.mark.parametrize(
    "body,content_type,status,code",
    [
        (b"PK\x03\x04 this is no archive", "application/zip", 400, "invalid_archive"),
        (b"hello", "text/plain", 415, "unsupported_media_type"),
        (b"\x89PNG not really", "image/png", 415, "unsupported_media_type"),
        (json.dumps({"images": []}), "application/json", 400, "no_image"),
        # An archive of no slice (its one entry is a text file, which is skipped).
        (zip_of([("notes.txt", b"hello")]), "application/zip", 422, "no_usable_slice"),
    ],
)
def test_bad_study_requests_get_stable_json_errors(service, body, content_type, status, code):
    got, answer = post_study(service, body=body, content_type=content_type)
    assert (got, answer["error"]["code"]) == (status, code), answer


def test_nothing_decodable_is_no_usable_slice(service):
    status, answer = post_study(service, [("a.png", b"garbage"), ("b.dcm", b"DICM? no")])
    assert (status, answer["error"]["code"]) == (422, "no_usable_slice"), answer
    assert "2 unreadable" in answer["error"]["message"]


def test_feedback_on_a_study_is_logged_with_its_slices(service):
    status, answer = post_study(service, slice_files())
    assert status == 200, answer
    (study,) = answer["studies"]
    status, stored = service.json(
        "POST", "/v1/feedback", json.dumps({"request_id": study["study_id"], "label": "non-COVID"}), "application/json"
    )
    assert status == 200, stored
    assert stored == {"request_id": study["study_id"], "label": "non-COVID", "kind": "study"}
    # A slice's id names a prediction.
    first = study["slices"][0]["request_id"]
    status, stored = service.json(
        "POST", "/v1/feedback", json.dumps({"request_id": first, "label": "COVID"}), "application/json"
    )
    assert (status, stored.get("kind")) == (200, "prediction"), stored
    with sqlite3.connect(service.log_path) as db:
        row = db.execute(
            "SELECT label, probability, threshold, rule, slices, used, refused, true_label "
            "FROM labelled_studies WHERE study_id = ?",
            (study["study_id"],),
        ).fetchone()
        slices = db.execute(
            "SELECT request_id, slice_index, probability, label FROM predictions "
            "WHERE study_id = ? ORDER BY slice_index",
            (study["study_id"],),
        ).fetchall()
    assert row is not None, "the study is not in labelled_studies"
    label, probability, threshold, rule, total, used, refused, truth = row
    assert (label, rule, total, used, refused, truth) == (study["label"], study["rule"], 4, 4, 0, "non-COVID")
    assert abs(probability - study["probability"]) < 1e-12 and abs(threshold - study["threshold"]) < 1e-12
    assert [r[0] for r in slices] == [s["request_id"] for s in study["slices"]]
    assert [r[1] for r in slices] == [0, 1, 2, 3]
    for (_, _, p, _), s in zip(slices, study["slices"]):
        assert abs(p - s["probability"]) < 1e-12


def test_split_studies_are_logged_one_row_each_and_refused_slices_unlabelled(service):
    files = dicom_series()
    status, answer = post_study(service, [(n, d) for n, d, _, _ in files], "?split=true")
    assert status == 200, answer
    with sqlite3.connect(service.log_path) as db:
        for study in answer["studies"]:
            row = db.execute(
                "SELECT series_uid, slices FROM studies WHERE study_id = ?", (study["study_id"],)
            ).fetchone()
            assert row == (study["series_instance_uid"], study["slices_total"])
    files = slice_files() + [("s99.png", blank_png())]
    status, answer = post_study(service, files)
    (study,) = answer["studies"]
    assert study["slices"][-1]["filename"] == "s99.png"
    with sqlite3.connect(service.log_path) as db:
        rows = db.execute(
            "SELECT slice_index, label, in_distribution FROM predictions WHERE study_id = ? ORDER BY slice_index",
            (study["study_id"],),
        ).fetchall()
    assert rows[-1] == (4, "", 0) and all(r[2] == 1 for r in rows[:-1])


def test_studies_are_counted_in_the_metrics(service):
    def count(label):
        text = service.call("GET", "/metrics", key=None)[2].decode()
        found = re.search(rf'^covidct_studies_total\{{label="{re.escape(label)}"\}} (\d+)$', text, re.M)
        return int(found.group(1)) if found else 0

    status, answer = post_study(service, slice_files())
    label = answer["studies"][0]["label"]
    before, none_before = count(label), count("none")
    post_study(service, slice_files())
    post_study(service, [("s1.png", png_of(training_slice())), ("s2.png", blank_png()), ("s3.png", blank_png())])
    assert count(label) == before + 1
    assert count("none") == none_before + 1
    text = service.call("GET", "/metrics", key=None)[2].decode()
    assert 'covidct_http_requests_total{route="/v1/predict/study",status="200"}' in text


def test_the_study_route_needs_an_api_key_and_is_documented(service):
    body, content_type = multipart(slice_files())
    status, _, data = service.call("POST", "/v1/predict/study", body, {"Content-Type": content_type}, key=None)
    assert status == 401 and json.loads(data)["error"]["code"] == "unauthorized"
    status, spec = service.json("GET", "/openapi.json", key=None)
    operation = spec["paths"]["/v1/predict/study"]["post"]
    assert {"multipart/form-data", "application/json", "application/zip"} <= set(operation["requestBody"]["content"])
    assert {p["name"] for p in operation["parameters"]} >= {"split", "explain"}


# ---- Limits and verdict rules of the service ------------------------------------------------

STUDY_LIMITS = {"slices": 6, "bytes": 200_000, "pixels": 50_000}


@pytest.fixture(scope="module")
def limited(covidct_bin, model_package, tmp_path_factory):
    s = Server(
        covidct_bin,
        model_package,
        tmp_path_factory.mktemp("study-limits"),
        "--max-study-slices",
        STUDY_LIMITS["slices"],
        "--max-study-bytes",
        STUDY_LIMITS["bytes"],
        "--max-study-pixels",
        STUDY_LIMITS["pixels"],
        "--study-min-slices",
        5,
    )
    yield s
    s.stop()


def garbage(n):
    """n files that cannot be decoded: a limit refused before decoding says so, not `no_usable_slice`."""
    return [(f"g{k}.png", b"garbage %d" % k) for k in range(n)]


@pytest.mark.parametrize("form", ["zip", "raw-zip", "zip-and-files"])
def test_too_many_slices_are_refused_before_decoding(limited, form):
    files = garbage(STUDY_LIMITS["slices"] + 1)
    if form == "zip":
        body, content_type = multipart([("s.zip", zip_of(files))])
    elif form == "raw-zip":
        body, content_type = zip_of(files), "application/zip"
    else:
        # Files and archive entries count together.
        body, content_type = multipart([("a.zip", zip_of(files[:4])), *files[4:]])
    status, answer = post_study(limited, body=body, content_type=content_type)
    assert (status, answer["error"]["code"]) == (413, "too_many_slices"), answer
    assert f"over the limit of {STUDY_LIMITS['slices']}" in answer["error"]["message"]


@pytest.mark.parametrize("form", ["multipart", "json"])
def test_too_many_files_are_refused_before_decoding(limited, form):
    files = garbage(STUDY_LIMITS["slices"] + 1)
    body, content_type = multipart(files) if form == "multipart" else (json_body(files), "application/json")
    status, answer = post_study(limited, body=body, content_type=content_type)
    assert status == 413 and answer["error"]["code"] == "too_many_slices", answer
    # At the limit, the same files are decoded (and found unreadable).
    body, content_type = multipart(files[:-1]) if form == "multipart" else (json_body(files[:-1]), "application/json")
    status, answer = post_study(limited, body=body, content_type=content_type)
    assert (status, answer["error"]["code"]) == (422, "no_usable_slice"), answer


@pytest.mark.parametrize("form", ["multipart", "json"])
def test_too_many_files_are_too_many_slices(limited, form):
    files = garbage(STUDY_LIMITS["slices"] + 1)
    body, content_type = multipart(files) if form == "multipart" else (json_body(files), "application/json")
    status, answer = post_study(limited, body=body, content_type=content_type)
    assert (status, answer["error"]["code"]) == (413, "too_many_slices"), answer


def test_study_pixels_are_summed_from_the_headers(limited):
    # Each 150×150 image is under the per-image limit; three are over the study's 50,000 pixels.
    side = 150
    assert 2 * side * side < STUDY_LIMITS["pixels"] < 3 * side * side
    image = png_of(Image.new("L", (side, side), 40))
    status, answer = post_study(limited, [(f"p{k}.png", image) for k in range(3)])
    assert (status, answer["error"]["code"]) == (413, "study_too_large"), answer
    status, answer = post_study(limited, [(f"p{k}.png", image) for k in range(2)])
    assert status == 200, answer


def test_study_bytes_are_counted_uncompressed_and_from_the_body(limited):
    # A zip of zeros: a few kB on the wire, over the limit once unpacked.
    archive = zip_of([("a.dcm", bytes(STUDY_LIMITS["bytes"] + 1))])
    assert len(archive) < 10_000
    status, answer = post_study(limited, body=archive, content_type="application/zip")
    assert (status, answer["error"]["code"]) == (413, "body_too_large"), answer
    status, answer = post_study(limited, [("big.png", bytes(STUDY_LIMITS["bytes"] + 1))])
    assert (status, answer["error"]["code"]) == (413, "body_too_large"), answer


def test_study_min_slices_is_the_servers(limited):
    status, answer = post_study(limited, slice_files())
    assert status == 200, answer
    (study,) = answer["studies"]
    assert study["label"] is None and study["slices_used"] == 4
    assert "at least 5" in study["reason"], study["reason"]


def test_a_slow_study_times_out_with_its_own_limit(covidct_bin, model_package, tmp_path):
    s = Server(
        covidct_bin, model_package, tmp_path, "--study-timeout-ms", 1, "--batch-wait-ms", 500, "--batch-size", 64
    )
    try:
        status, answer = post_study(s, slice_files())
        assert (status, answer["error"]["code"]) == (503, "timeout"), answer
        # The single-image routes keep theirs.
        status, answer = s.json("POST", "/v1/predict", png_of(training_slice()), "image/png")
        assert status == 200, answer
    finally:
        s.stop()


# ---- The CLI ----------------------------------------------------------------------------------


def cli_study(covidct_bin, package, *args):
    result = subprocess.run(
        [str(covidct_bin), "predict", "--model", str(package), "--study", *map(str, args)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    return result


def write_files(folder: Path, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        (folder / name).write_bytes(data)
    return folder


def test_cli_study_of_a_folder_a_zip_and_files_matches_the_service(
    covidct_bin, model_package, reference, group, tmp_path
):
    (expected,) = reference["studies"]
    folder = write_files(tmp_path / "series", slice_files())
    (folder / "notes.txt").write_text("not a slice")  # skipped
    archive = tmp_path / "series.zip"
    archive.write_bytes(zip_of(slice_files()))
    for paths in ([folder], [archive], [folder / n for n in NATURAL]):
        result = cli_study(covidct_bin, model_package, "--json", *paths)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["slices_received"] == 4 and answer["unreadable"] == []
        assert answer["model"]["name"] and answer["model"]["package"] == str(model_package)
        assert answer["timing"]["total_ms"] > 0
        (study,) = answer["studies"]
        # One shape: the service's study without the ids only a service has.
        assert set(study) == set(expected) - {"study_id"}
        for got, want in zip(study["slices"], expected["slices"]):
            assert set(got) == set(want) - {"request_id"}
        assert [Path(s["filename"].split(":")[-1]).name for s in study["slices"]] == NATURAL
        assert abs(study["probability"] - expected["probability"]) < SAME
        assert study["label"] == expected["label"] and study["drivers"] == expected["drivers"]
        assert (study["rule"], study["slices_used"], study["slices_refused"]) == (group["rule"], 4, 0)
        for got, want in zip(study["slices"], expected["slices"]):
            assert abs(got["probability"] - want["probability"]) < SAME
        assert abs(study["probability"] - study_probability(group, [s["probability"] for s in study["slices"]])) < 1e-9
    # The table names the verdict.
    result = cli_study(covidct_bin, model_package, folder)
    assert result.returncode == 0, result.stderr
    assert expected["label"] in result.stdout and f"rule={group['rule']}" in result.stdout


def test_cli_study_exit_status_and_refusals(covidct_bin, model_package, tmp_path):
    mostly_blank = write_files(
        tmp_path / "blank",
        [("s1.png", png_of(training_slice()))]
        + [(f"s{k}.png", blank_png(40 + 8 * k)) for k in range(2, 5)]
        + [("s9.png", b"broken")],
    )
    result = cli_study(covidct_bin, model_package, "--json", mostly_blank)
    assert result.returncode == 4, result.stderr
    answer = json.loads(result.stdout)
    (study,) = answer["studies"]
    assert study["label"] is None and "usable" in study["reason"]
    assert [Path(u["filename"]).name for u in answer["unreadable"]] == ["s9.png"]
    assert answer["unreadable"][0]["error"]["code"] == "invalid_image"  # as the service reports it
    refused = [s for s in study["slices"] if not s["in_distribution"]]
    assert len(refused) == 3 and all(s["probability"] is None and s["ood"]["refusals"] for s in refused)
    # --min-slices and --min-usable-share are the CLI's.
    result = cli_study(covidct_bin, model_package, "--json", "--min-slices", 1, "--min-usable-share", 0.2, mostly_blank)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["studies"][0]["label"] in ("COVID", "non-COVID")
    # Nothing decodable, too many slices, a missing path: errors, exit 1, a message.
    nothing = write_files(tmp_path / "nothing", [("a.png", b"x"), ("b.png", b"y")])
    result = cli_study(covidct_bin, model_package, nothing)
    assert result.returncode == 1 and "decoded" in result.stderr, result.stderr
    result = cli_study(covidct_bin, model_package, "--max-slices", 3, mostly_blank)
    assert result.returncode == 1 and "over the limit of 3" in result.stderr, result.stderr
    result = cli_study(covidct_bin, model_package, tmp_path / "absent")
    assert result.returncode == 1 and "absent" in result.stderr, result.stderr


def test_cli_study_refuses_mixed_series_naming_them_and_splits_them(covidct_bin, model_package, tmp_path, group):
    folder = write_files(tmp_path / "dicom", [(name, data) for name, data, _, _ in dicom_series()])
    result = cli_study(covidct_bin, model_package, folder)
    assert result.returncode == 1
    for series_uid in SERIES:
        assert series_uid in result.stderr, result.stderr
    result = cli_study(covidct_bin, model_package, "--json", "--split", folder)
    assert result.returncode == 0, result.stderr
    studies = json.loads(result.stdout)["studies"]
    assert sorted(s["series_instance_uid"] for s in studies) == sorted(SERIES)
    for study in studies:
        _, zs = SERIES[study["series_instance_uid"]]
        assert study["ordered_by"] == "position"
        assert [s["location_mm"] for s in study["slices"]] == sorted(zs)
        usable = [s["probability"] for s in study["slices"] if s["in_distribution"]]
        assert abs(study["probability"] - study_probability(group, usable)) < 1e-9
