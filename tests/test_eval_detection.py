"""``faceveil eval detection``: matching and AP, the official WIDER algorithm, loaders' errors, the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil.cli import main
from faceveil.detectors.fusion import fuse_faces
from faceveil.errors import MissingExtraError, UsageError
from faceveil.eval import wider_official
from faceveil.eval.datasets import load_dataset
from faceveil.eval.detection import (
    ImageDetections,
    average_precision,
    evaluate,
    match,
    official_check,
)
from faceveil.eval.metrics import iou_matrix
from faceveil.types import Face

# --- small synthetic datasets ----------------------------------------------------------------------------


def _image(path: Path, size: tuple[int, int] = (200, 150)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)


def _wider(root: Path, entries: dict[str, list[tuple]], images: bool = True) -> Path:
    """A WIDER FACE folder: images/<name> and wider_face_val_bbx_gt.txt."""
    lines = []
    for name, boxes in entries.items():
        lines += [name, str(len(boxes))]
        lines += [" ".join(str(v) for v in (*b, 0, 0, 0, 0, 0, 0)) + " " for b in boxes] or [
            "0 0 0 0 0 0 0 0 0 0 "
        ]
        if images:
            _image(root / "images" / name)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wider_face_val_bbx_gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _voc(root: Path, boxes: list[tuple[int, int, int, int]], size: tuple[int, int] = (400, 267)) -> Path:
    objects = "".join(
        f"\n  <object>\n    <name>face</name>\n    <bndbox>\n      <xmin>{x0}</xmin>\n      <ymin>{y0}</ymin>"
        f"\n      <xmax>{x1}</xmax>\n      <ymax>{y1}</ymax>\n    </bndbox>\n  </object>"
        for x0, y0, x1, y1 in boxes
    )
    head = f"<annotation>\n  <filename>a.png</filename>\n  <size><width>{size[0]}</width></size>"
    xml = f"{head}{objects}\n</annotation>"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "a.xml").write_text(xml, encoding="utf-8")
    _image(root / "images" / "a.png", size)
    return root


def _coco(root: Path, bbox: list[float], file_name: str = "a.jpg", make_image: bool = True) -> Path:
    doc = {
        "images": [{"id": 1, "file_name": file_name, "width": 200, "height": 150}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "face"}],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "faces.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    if make_image:
        _image(root / "images" / file_name)
    return root


def _face(x: float, y: float, w: float, h: float, score: float) -> Face:
    return Face((x, y, w, h), score, "test")


# --- matching and AP ---------------------------------------------------------------------------------------


def test_match_follows_wider_ignore_rule() -> None:
    gt = np.array([[0, 0, 20, 20], [100, 100, 20, 20], [50, 0, 10, 10]], float)
    ignore = np.array([False, False, True])
    det = np.array(
        [
            [0, 0, 20, 20],  # hits face 0
            [1, 1, 20, 20],  # duplicate of face 0: false positive
            [50, 0, 10, 10],  # on the ignored face: neither way
            [300, 300, 10, 10],  # nothing there: false positive
        ],
        float,
    )
    labels, found = match(det, np.array([0.9, 0.8, 0.7, 0.6]), gt, ignore)
    assert labels.tolist() == [1, 0, -1, 0]
    assert found.tolist() == [True, False, False]
    # Score order decides who finds the face, not list order.
    labels, _ = match(det[:2], np.array([0.5, 0.9]), gt, ignore)
    assert labels.tolist() == [0, 1]


def test_match_pixel_inclusive_boxes_matter_for_tiny_faces() -> None:
    gt = np.array([[10, 10, 4, 4]], float)
    det = np.array([[11, 11, 4, 4]], float)  # continuous IoU 9/23 = 0.39; inclusive 16/34 = 0.47
    det2 = np.array([[10, 11, 4, 4]], float)  # continuous 12/20 = 0.6; inclusive 20/30 = 0.67
    assert match(det, np.array([1.0]), gt, np.array([False]))[0].tolist() == [0]
    assert match(det2, np.array([1.0]), gt, np.array([False]), inclusive=True)[0].tolist() == [1]
    det3 = np.array([[10, 10, 3, 2]], float)  # continuous 6/16 = 0.375; inclusive 12/25 = 0.48
    wide = np.array([[10, 10, 3, 3]], float)  # continuous 9/16 = 0.56; inclusive 16/25 = 0.64
    assert match(det3, np.array([1.0]), gt, np.array([False]), inclusive=True)[0].tolist() == [0]
    assert match(wide, np.array([1.0]), gt, np.array([False]), inclusive=True)[0].tolist() == [1]


def test_average_precision_by_hand() -> None:
    # Ranked: hit, miss, hit, (ignored), miss; 4 faces. Recall 0.25 at precision 1, 0.5 at 2/3.
    scores = np.array([0.9, 0.8, 0.7, 0.65, 0.6])
    labels = np.array([1, 0, 1, -1, 0])
    ap, precision, recall = average_precision(scores, labels, faces=4)
    assert ap == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)
    assert recall.tolist() == [0.25, 0.25, 0.5, 0.5]
    assert precision[-1] == pytest.approx(0.5)
    # Tied scores are one point of the curve, whatever their order.
    ap_a, *_ = average_precision(np.array([0.5, 0.5]), np.array([1, 0]), faces=1)
    ap_b, *_ = average_precision(np.array([0.5, 0.5]), np.array([0, 1]), faces=1)
    assert ap_a == ap_b == pytest.approx(0.5)
    assert np.isnan(average_precision(scores, labels, faces=0)[0])


def _fuse_reference(faces: list[Face], iou: float) -> list[Face]:
    """The plain O(n^2) greedy weighted box fusion that fuse_faces must reproduce exactly."""
    if len(faces) < 2:
        return list(faces)
    order = sorted(faces, key=lambda f: -f.score)
    boxes = np.asarray([f.bbox for f in order], np.float64)
    scores = np.asarray([f.score for f in order], np.float64)
    free = np.ones(len(order), bool)
    fused = []
    for i, best in enumerate(order):
        if not free[i]:
            continue
        group = np.nonzero(free & (iou_matrix(boxes[i : i + 1], boxes)[0] > iou))[0]
        group = group if group.size else np.array([i])
        free[group] = False
        box = (boxes[group] * scores[group][:, None]).sum(axis=0) / scores[group].sum()
        names = "+".join(dict.fromkeys(order[j].detector for j in group))
        marks = next((order[j].landmarks for j in group if order[j].landmarks is not None), None)
        fused.append(Face(tuple(float(v) for v in box), best.score, names, marks))
    return fused


def test_fuse_faces_matches_the_plain_greedy_fusion() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(0, 40))
        xy = rng.integers(0, 60, (n, 2)).astype(float)
        wh = rng.integers(0, 25, (n, 2)).astype(float)
        scores = np.round(rng.random(n), 1) + 0.05
        faces = [Face((*xy[i], *wh[i]), float(scores[i]), str(rng.choice(["a", "b"]))) for i in range(n)]
        assert fuse_faces(faces, 0.3) == _fuse_reference(faces, 0.3)


# --- the official WIDER algorithm against ours, on a synthetic set -----------------------------------------


def _cell(items: list) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def _write_mats(folder: Path, event: str, stems: list[str], boxes: list[np.ndarray], keep: dict) -> None:
    sio = pytest.importorskip("scipy.io")
    folder.mkdir(parents=True, exist_ok=True)
    face = {
        "event_list": _cell([event]),
        "file_list": _cell([_cell(stems)]),
        "face_bbx_list": _cell([_cell([b.astype(np.int32) for b in boxes])]),
    }
    sio.savemat(folder / "wider_face_val.mat", face)
    for setting in ("easy", "medium", "hard"):
        lists = _cell([_cell([np.asarray(k, np.int32).reshape(-1, 1) for k in keep[setting]])])
        sio.savemat(folder / f"wider_{setting}_val.mat", {**face, "gt_list": lists})


@pytest.fixture
def synthetic_wider(tmp_path: Path) -> tuple[Path, list[ImageDetections]]:
    """Eight images with faces of 4 to 60 px, the official .mat files (no difficulty.csv), detections."""
    rng = np.random.default_rng(7)
    event, entries, boxes, keep = "0--Test", {}, [], {"easy": [], "medium": [], "hard": []}
    detections = []
    for i in range(8):
        n = int(rng.integers(3, 12))
        wh = rng.integers(4, 60, n)
        xy = rng.integers(0, 130, (n, 2))
        b = np.column_stack([xy, wh, wh]).astype(float)
        b[:, 0] = np.minimum(b[:, 0], 200 - b[:, 2])
        b[:, 1] = np.minimum(b[:, 1], 150 - b[:, 3])
        name = f"{event}/img_{i}.jpg"
        entries[name] = [tuple(int(v) for v in row) for row in b]
        boxes.append(b)
        keep["hard"].append([j + 1 for j in range(n) if b[j, 3] >= 6])
        keep["medium"].append([j + 1 for j in range(n) if b[j, 3] >= 15])
        keep["easy"].append([j + 1 for j in range(n) if b[j, 3] >= 30])
        faces = []
        for j in range(n):
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.12 * b[j, 3], 4)
                faces.append(_face(*(b[j] + jitter), float(rng.random())))
        for _ in range(int(rng.integers(0, 4))):
            faces.append(_face(*rng.integers(0, 150, 2), 20, 20, float(rng.random() * 0.6)))
        detections.append(ImageDetections(name, 200, 150, faces, [f for f in faces if f.score >= 0.5]))
    root = _wider(tmp_path / "wider", entries)
    _write_mats(root / "ground_truth", event, [f"img_{i}" for i in range(8)], boxes, keep)
    return root, detections


def test_official_algorithm_agrees_on_synthetic_set(synthetic_wider) -> None:
    root, detections = synthetic_wider
    dataset = load_dataset(root)  # the easy/medium/hard split comes from the .mat files
    assert dataset.sets == ("easy", "medium", "hard")
    ours = evaluate(dataset, detections, dataset.sets)
    check = official_check(dataset, detections)
    assert check is not None
    for name in ("easy", "medium", "hard"):
        assert ours[name].faces == check["sets"][name]["faces"] == dataset.faces_in(name)
        assert ours[name].ap == pytest.approx(check["sets"][name]["ap"], abs=0.01)
        assert 0.2 < ours[name].ap < 1.0


def test_official_prediction_files_round_trip(synthetic_wider, tmp_path: Path) -> None:
    root, detections = synthetic_wider
    from faceveil.eval.detection import wider_predictions

    preds = wider_predictions(detections)
    wider_official.write_predictions(tmp_path / "pred", preds)
    again = wider_official.read_predictions(tmp_path / "pred")
    assert set(again) == set(preds)
    gt = wider_official.load_gt(root / "ground_truth")
    a = wider_official.evaluate(preds, gt)
    b = wider_official.evaluate(again, gt)
    for name in a:
        assert a[name].ap == pytest.approx(b[name].ap, abs=1e-3)
    assert wider_official.main(["-p", str(tmp_path / "pred"), "-g", str(root / "ground_truth")]) == 0


def test_official_image_eval_semantics() -> None:
    """A prediction on an uncounted face vanishes; a second one on a found face is a false positive."""
    gt = np.array([[0, 0, 20, 20], [100, 100, 20, 20]], float)
    pred = np.array([[0, 0, 20, 20, 0.9], [1, 1, 20, 20, 0.8], [100, 100, 20, 20, 0.7]])
    recall, proposals = wider_official._image_eval(pred, gt, np.array([1, 0]), 0.5)
    assert recall.tolist() == [1, 1, 1]
    assert proposals.tolist() == [1, 1, -1]


# --- bad input ----------------------------------------------------------------------------------------------


def test_folder_in_no_format(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.jpg")
    (tmp_path / "notes.json").write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(UsageError, match="no ground truth found"):
        load_dataset(tmp_path)
    assert main(["eval", "detection", "--dataset", str(tmp_path), "-o", str(tmp_path / "r")]) == 2


def test_wider_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    root = _wider(tmp_path, {"0--A/a.jpg": [(10, 10, 20, 20)], "0--A/b.jpg": [(5, 5, 10, 10)]})
    txt = root / "wider_face_val_bbx_gt.txt"
    lines = txt.read_text().splitlines()
    lines[5] = "5 5 ten 10 0 0 0 0 0 0"
    txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"wider_face_val_bbx_gt\.txt:6: expected numbers"):
        load_dataset(root)
    lines[5] = "5 5"
    txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"\.txt:6: expected 'x y w h"):
        load_dataset(root)
    lines[4] = "three"
    txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"\.txt:5: expected the number of faces of '0--A/b.jpg'"):
        load_dataset(root)
    lines[4] = "3"  # announces more faces than there are lines
    lines[5] = "5 5 10 10 0 0 0 0 0 0"
    txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"\.txt:7: the file ends"):
        load_dataset(root)


def test_wider_count_zero_with_and_without_placeholder(tmp_path: Path) -> None:
    root = _wider(tmp_path, {"0--A/a.jpg": [], "0--A/b.jpg": [(5, 5, 10, 10)]})
    data = load_dataset(root)
    assert [len(gt.boxes) for gt in data.images] == [0, 1]
    txt = root / "wider_face_val_bbx_gt.txt"
    lines = [line for line in txt.read_text().splitlines() if not line.startswith("0 0 0 0")]
    txt.write_text("\n".join(lines) + "\n")
    assert [len(gt.boxes) for gt in load_dataset(root).images] == [0, 1]


def test_images_listed_but_missing(tmp_path: Path) -> None:
    root = _wider(tmp_path / "w", {"0--A/a.jpg": [(10, 10, 20, 20)]}, images=False)
    with pytest.raises(
        UsageError, match=r"wider_face_val_bbx_gt\.txt:1: lists image '0--A/a.jpg', but .* does not"
    ):
        load_dataset(root)
    root = _coco(tmp_path / "c", [10, 10, 20, 20], make_image=False)
    with pytest.raises(UsageError, match=r"faces\.json:\d+: lists image 'a.jpg'"):
        load_dataset(root)
    root = _voc(tmp_path / "v", [(10, 10, 40, 40)])
    (root / "images" / "a.png").unlink()
    with pytest.raises(UsageError, match=r"a\.xml:2: lists image 'a.png'"):
        load_dataset(root)


def test_boxes_outside_the_image(tmp_path: Path) -> None:
    # 1 px past the edge (the VOC off-by-one): clipped, with a note naming file and line.
    data = load_dataset(_voc(tmp_path / "v1", [(10, 10, 40, 40), (381, 14, 401, 34)]))
    assert data.images[0].boxes[1].tolist() == [381, 14, 19, 20]
    assert len(data.warnings) == 1 and "a.xml:15:" in data.warnings[0] and "clipped" in data.warnings[0]
    # More than that: an error naming file and line.
    with pytest.raises(UsageError, match=r"a\.xml:6: box .* lies 6 px outside the 400x267 image"):
        load_dataset(_voc(tmp_path / "v2", [(381, 14, 406, 34)]))
    with pytest.raises(UsageError, match=r"faces\.json:\d+: box .* outside the 200x150 image"):
        load_dataset(_coco(tmp_path / "c", [190, 10, 30, 20]))
    with pytest.raises(UsageError, match=r"\.txt:3: box .* outside"):
        load_dataset(_wider(tmp_path / "w", {"0--A/a.jpg": [(10, 140, 20, 20)]}))


def test_other_malformed_annotations(tmp_path: Path) -> None:
    root = _voc(tmp_path / "v", [(10, 10, 40, 40)])
    xml = root / "annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<xmax>40</xmax>", "<xmax>4O</xmax>"))
    with pytest.raises(UsageError, match=r"a\.xml:6: a <bndbox> value is not a number"):
        load_dataset(root)
    xml.write_text(xml.read_text().replace("</annotation>", ""))
    with pytest.raises(UsageError, match=r"a\.xml:\d+: not valid XML"):
        load_dataset(root)
    root = _coco(tmp_path / "c", [10, 10, 20, 20])
    (root / "faces.json").write_text(
        (root / "faces.json").read_text().replace('"bbox": [', '"bbox": [[]], "x": [')
    )
    with pytest.raises(UsageError, match=r"faces\.json:\d+: 'bbox' must be"):
        load_dataset(root)


def test_difficulty_needs_a_split(tmp_path: Path) -> None:
    root = _wider(tmp_path, {"0--A/a.jpg": [(10, 10, 20, 20)]})
    assert load_dataset(root).sets == ("all",)
    with pytest.raises(UsageError, match="no easy/medium/hard split"):
        load_dataset(root, "hard")
    with pytest.raises(UsageError, match="WIDER FACE sets only"):
        load_dataset(_coco(tmp_path / "c", [10, 10, 20, 20]), "easy")


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from faceveil.eval import report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"faceveil\[eval\]"):
        report._pyplot()
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(MissingExtraError, match=r"faceveil\[eval\]"):
        wider_official.load_gt(tmp_path)


# --- on the shared data -------------------------------------------------------------------------------------


def test_real_sets_load(shared_data: Path) -> None:
    voc = load_dataset(shared_data / "facemask-voc")
    assert voc.format == "voc" and voc.face_count == 241
    assert len(voc.warnings) == 1 and "maksssksksss110.xml" in voc.warnings[0]
    wider = load_dataset(shared_data / "wider-val-parade")
    assert {s: wider.faces_in(s) for s in wider.sets} == {"easy": 238, "medium": 608, "hard": 2930}
    assert load_dataset(shared_data / "dlib-faces-coco").face_count == 43


def test_mat_split_matches_difficulty_csv(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    src = shared_data / "wider-val-parade"
    root = tmp_path / "wider"
    root.mkdir()
    shutil.copy(src / "wider_face_val_bbx_gt.txt", root)
    (root / "images").symlink_to(src / "images")
    (root / "ground_truth").symlink_to(src / "ground_truth")
    from_mat = load_dataset(root)
    from_csv = load_dataset(src)
    for a, b in zip(from_mat.images, from_csv.images, strict=True):
        for s in ("easy", "medium", "hard"):
            assert (a.ignore_by_set[s] == b.ignore_by_set[s]).all(), (a.name, s)


def test_two_level_detection_equals_run(shared_data: Path) -> None:
    """The operating faces taken from the low-threshold pass are exactly what the detector returns."""
    from faceveil import detectors
    from faceveil.eval.detection import detect_two_levels
    from faceveil.io.image import read_picture

    default = detectors.create("default", threads=1)
    voting = detectors.FusedDetector(default.members, vote=0.3)
    paths = sorted((shared_data / "wider-val-parade" / "images" / "0--Parade").glob("*.jpg"))[:2]
    paths += sorted((shared_data / "facemask-voc" / "images").glob("*.png"))[:2]
    for detector in (default, voting):
        for path in paths:
            rgb = read_picture(path).rgb8()
            for threshold in (None, 0.5):
                curve, operating = detect_two_levels(detector, rgb, threshold)
                assert operating == detector.detect(rgb, threshold), (detector.vote, path, threshold)
                assert len(curve) >= len(operating)


def _eval(dataset: Path, out: Path, figures: Path, *extra: str) -> int:
    return main(
        ["eval", "detection", "--dataset", str(dataset), "-o", str(out), "--json", str(figures), "-q", *extra]
    )


def test_command_on_dlib_set(shared_data: Path, tmp_path: Path) -> None:
    out, figures = tmp_path / "report", tmp_path / "figures.json"
    code = _eval(shared_data / "dlib-faces-coco", out, figures, "-j", "1")
    assert code == 0
    data = json.loads(figures.read_text())
    figs = data["sets"]["all"]
    assert set(figs) >= {"ap", "recall", "precision", "protected", "protected_by_size"}
    assert figs["faces"] == 43 and figs["protected"] >= 0.95 and figs["ap"] >= 0.9
    assert set(figs["protected_by_size"]) == {"<16", "16-32", "32-64", ">64"}
    for name in ("report.md", "report.html", "pr_curve.png", "protected_by_size.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| all | 43 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_wider_parade_agrees_with_official_evaluation(shared_data: Path, tmp_path: Path) -> None:
    """On wider-val-parade the default detector's AP is within 0.01 of WIDER's official algorithm."""
    figures = tmp_path / "figures.json"
    code = _eval(shared_data / "wider-val-parade", tmp_path / "r", figures)
    assert code == 0
    data = json.loads(figures.read_text())
    for name in ("easy", "medium", "hard"):
        figs = data["sets"][name]
        assert abs(figs["ap"] - data["official_wider"]["sets"][name]["ap"]) <= 0.01, name
        assert abs(figs["ap_difference"]) <= 0.01
        assert figs["ap"] > 0.6 and figs["protected"] > 0.85 and 0 < figs["precision"] < 1
    assert [data["sets"][n]["faces"] for n in ("easy", "medium", "hard")] == [238, 608, 2930]
    assert data["official_wider"]["max_difference"] <= 0.01


@pytest.mark.slow
def test_facemask_voc_command(shared_data: Path, tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    code = _eval(shared_data / "facemask-voc", tmp_path / "r", figures)
    assert code == 0
    data = json.loads(figures.read_text())
    assert data["sets"]["all"]["faces"] == 241 and data["sets"]["all"]["protected"] > 0.9
    assert any("maksssksksss110.xml" in w for w in data["dataset"]["warnings"])


def test_operating_threshold_in_words() -> None:
    from faceveil import detectors
    from faceveil.eval.detection import describe_threshold

    assert describe_threshold(detectors.create("default"), None) == "yunet 0.3, centerface 0.2"
    assert describe_threshold(detectors.create("thorough"), None) == "thorough 0.23"
    assert describe_threshold(detectors.create("thorough"), 0.4) == "0.4"
