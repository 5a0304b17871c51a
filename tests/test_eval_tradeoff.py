"""``faceveil eval tradeoff``: the sweep's caching is exact, its figures agree with the single evaluations."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from faceveil.cli import main
from faceveil.detectors.fusion import FusedDetector
from faceveil.errors import UsageError
from faceveil.eval.tradeoff import (
    DetectionCache,
    Goals,
    Point,
    PointResult,
    Reid,
    SetFigures,
    SweepDetector,
    TradeoffResult,
    UtilityFigures,
    detector_identity,
    grid,
    image_key,
    make_method,
    mark_pareto,
    markdown,
    parse_threshold,
    write_outputs,
)
from faceveil.types import Face

# --- settings ---------------------------------------------------------------------------------------------


def test_thresholds_and_methods_parse() -> None:
    assert parse_threshold("own") is None and parse_threshold("default") is None
    assert parse_threshold(" 0.5 ") == 0.5
    for bad in ("1.5", "-0.1", "high"):
        with pytest.raises(UsageError):
            parse_threshold(bad)
    assert make_method("blur").strength == 0.2
    assert make_method("blur:0.1").strength == 0.1
    assert make_method("pixelate:12").cells == 12
    assert make_method("box:128").value == 128
    for bad in ("blur:x", "pixelate:0", "smudge", "box:-1"):
        with pytest.raises(UsageError):
            make_method(bad)


def test_grid_is_every_combination_once() -> None:
    points = grid(["default", "yunet"], [None, 0.5, 0.5], ["blur"], ["ellipse", "box"], [0.35])
    assert len(points) == 2 * 2 * 2
    assert points[0] == Point("default", None, "blur", "ellipse", 0.35)
    assert points[1] == Point("default", 0.5, "blur", "ellipse", 0.35)
    assert points[0].name == "default@own blur ellipse m0.35"
    assert points[0].series == points[1].series


# --- the detection cache ----------------------------------------------------------------------------------


class Counting:
    """A leaf detector with a default threshold: faces at fixed places, scores 0.1 ... 0.9; counts calls."""

    def __init__(self, name: str = "fake", shift: float = 0.0, threshold: float = 0.3) -> None:
        self.name = name
        self.shift = shift
        self.threshold = threshold
        self.calls = 0

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        self.calls += 1
        thr = self.threshold if threshold is None else threshold
        faces = [
            Face((10.0 * i + self.shift, 5.0 + 1 / 3, 8.0 + i, 9.5), s, self.name, ((1.0, 2.0),) * 5)
            for i, s in enumerate((0.1, 0.25, 0.5, 0.7, 0.9))
        ]
        return [f for f in faces if f.score >= thr]


class NoDefault(Counting):
    """A leaf detector that does not say its default threshold."""

    def __init__(self) -> None:
        super().__init__("nodefault")
        del self.threshold
        self._own = 0.6

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        self.threshold = self._own
        try:
            return super().detect(rgb, threshold)
        finally:
            del self.threshold


@pytest.mark.parametrize("vote", [None, 0.3])
def test_sweep_detector_answers_like_the_detector_and_runs_it_once(
    tmp_path: Path, vote: float | None
) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    a, b = Counting("a"), Counting("b", shift=1.0, threshold=0.6)
    fused = FusedDetector([a, b], vote=vote)
    direct = {t: fused.detect(rgb, t) for t in (None, 0.2, 0.5, 0.8)}
    a.calls = b.calls = 0
    sweep = SweepDetector(fused, DetectionCache(tmp_path))
    for t, expected in direct.items():
        assert sweep.detect(rgb, t) == expected, t
    assert (a.calls, b.calls) == (1, 1)
    # A second process reads the same faces back from disk, to the bit.
    a2, b2 = Counting("a"), Counting("b", shift=1.0, threshold=0.6)
    again = SweepDetector(FusedDetector([a2, b2], vote=vote), DetectionCache(tmp_path))
    for t, expected in direct.items():
        assert again.detect(rgb, t) == expected
    assert (a2.calls, b2.calls) == (0, 0)
    # Another image is another key.
    other = rgb.copy()
    other[0, 0, 0] = 1
    assert image_key(other) != image_key(rgb)
    again.detect(other, 0.5)
    assert (a2.calls, b2.calls) == (1, 1)


def test_a_threshold_below_the_cached_floor_runs_again(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    leaf = Counting()
    sweep = SweepDetector(leaf, DetectionCache(None), floor=0.3)
    assert [f.score for f in sweep.detect(rgb, 0.3)] == [0.5, 0.7, 0.9]
    assert [f.score for f in sweep.detect(rgb, 0.05)] == [0.1, 0.25, 0.5, 0.7, 0.9]
    assert leaf.calls == 2
    sweep.detect(rgb, 0.2)
    assert leaf.calls == 2


def test_detectors_without_a_default_threshold_are_cached_per_threshold(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    leaf = NoDefault()
    sweep = SweepDetector(leaf, DetectionCache(tmp_path))
    assert [f.score for f in sweep.detect(rgb)] == [0.7, 0.9]
    assert [f.score for f in sweep.detect(rgb, 0.5)] == [0.5, 0.7, 0.9]
    sweep.detect(rgb)
    assert leaf.calls == 2


def test_identity_tells_settings_apart_but_not_threads() -> None:
    one, two = Counting(threshold=0.3), Counting(threshold=0.5)
    two.threads = 4
    assert detector_identity(one) == detector_identity(two)
    assert detector_identity(Counting(shift=1.0)) != detector_identity(one)
    assert "source=" in detector_identity(one)


def test_torn_cache_lines_are_misses(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    leaf = Counting()
    SweepDetector(leaf, DetectionCache(tmp_path)).detect(rgb)
    (path,) = (tmp_path / "tradeoff").rglob("*.jsonl")
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")
    fresh = Counting()
    assert SweepDetector(fresh, DetectionCache(tmp_path)).detect(rgb) == leaf.detect(rgb)
    assert fresh.calls == 1


def test_real_detectors_through_the_cache(astronaut: np.ndarray, tmp_path: Path) -> None:
    """YuNet, CenterFace and the fused default answer from the cache exactly as when run directly."""
    from faceveil import detectors

    for name in ("default", "yunet"):
        detector = detectors.create(name, threads=1)
        sweep = SweepDetector(detector, DetectionCache(tmp_path))
        for image in (astronaut, np.ascontiguousarray(astronaut[::2, ::2])):
            for threshold in (None, 0.3, 0.6, 0.9):
                assert sweep.detect(image, threshold) == detector.detect(image, threshold), (name, threshold)


# --- Pareto front, goals, outputs -------------------------------------------------------------------------


def _point(
    name: str, threshold: float | None, protected: float, drop: float, reid: float = 0.0
) -> PointResult:
    r = PointResult(Point(name, threshold, "blur", "ellipse", 0.35))
    r.sets["faces/all"] = SetFigures(protected, 0.9, protected, 100, 90)
    r.utility = UtilityFigures(
        images=1000,
        top1_originals=0.84,
        top1_anonymized=0.84 - drop,
        top1_drop=drop,
        top1_drop_ci=(drop - 0.01, drop + 0.01),
        top5_originals=0.96,
        top5_anonymized=0.95,
        top5_drop=0.01,
        top5_drop_ci=(0.0, 0.02),
        mcnemar_p=0.5,
        correct_to_wrong=3,
        wrong_to_correct=1,
        touched=100,
        faces=120,
    )
    r.reid = Reid()
    for i in range(100):
        r.reid.add(0.9 if i < round(100 * reid) else 0.1, i % 2 == 0, None, "record")
    return r


def _result(points: list[PointResult], goals: Goals | None = None) -> TradeoffResult:
    result = TradeoffResult(
        points=points,
        detection_sets={"faces": {"format": "coco", "images": 9, "faces": {"all": 100}}},
        primary=["faces/all"],
        utility={"images_folder": "imgs", "images": 1000, "model": "m", "top1_originals": 0.84},
        reid_settings={"model": "SFace", "cosine": 0.363, "min_face": 32.0},
        goals=goals or Goals(),
    )
    mark_pareto(result)
    if not result.goals.empty():
        for p in result.points:
            p.meets = result.goals.check(p, result.primary)
    return result


def test_pareto_front_and_goals() -> None:
    points = [
        _point("a", None, 0.95, 0.10),  # best protection
        _point("a", 0.5, 0.90, 0.05),
        _point("a", 0.7, 0.85, 0.06),  # dominated by 0.5
        _point("b", 0.5, 0.80, 0.01),  # least drop
        _point("b", 0.7, 0.80, 0.01, reid=0.02),  # same but worse re-id: dominated
    ]
    goals = Goals(max_top1_drop=0.055, min_protected={"faces": 0.88}, max_reid_share=0.01)
    result = _result(points, goals)
    assert [p.pareto for p in result.points] == [True, True, False, True, False]
    assert [p.meets for p in result.points] == [False, True, False, False, False]
    data = result.to_json()
    assert data["pareto_front"] == [points[i].point.name for i in (0, 1, 3)]
    assert data["meeting_goals"] == ["a@0.5 blur ellipse m0.35"]
    first = data["points"][0]
    assert first["protected"] == {"faces/all": 0.95}
    assert first["top1_drop"] == 0.1 and first["top1_drop_ci"] == [0.09, 0.11]
    assert first["touched_share"] == 0.1 and first["reid_share"] == 0.0
    text = markdown(result)
    assert "| protected faces/all |" in text and "## Pareto front (3 of 5)" in text
    assert "## Meeting every goal" in text and "- a@0.5 blur ellipse m0.35" in text


def test_outputs_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = _result([_point("a", None, 0.95, 0.10), _point("a", 0.5, 0.9, 0.05)], Goals(max_top1_drop=0.01))
    written = write_outputs(result, tmp_path / "out", tmp_path / "copy.json")
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "copy.json").read_text())["points"][1]["threshold"] == 0.5
    assert "![privacy against utility](tradeoff.png)" in written["markdown"].read_text()


def test_usage_errors(tmp_path: Path) -> None:
    assert main(["eval", "tradeoff", "-o", str(tmp_path / "r")]) == 2
    assert main(["eval", "tradeoff", "--images", str(tmp_path), "-o", str(tmp_path / "r")]) == 2
    for extra in (["--thresholds", "own,2"], ["--margins", "a"], ["--min-protected", "x"], ["--limit", "0"]):
        args = ["eval", "tradeoff", "--detection-set", str(tmp_path), "-o", str(tmp_path / "r"), *extra]
        assert main(args) == 2, extra
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "tradeoff", "--detection-set", str(empty), "-o", str(tmp_path / "r"), "-q"]) == 2


# --- end to end on real data ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_agrees_with_eval_detection_and_eval_utility(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from faceveil.anonymizer import Anonymizer
    from faceveil.eval.datasets import load_dataset
    from faceveil.eval.detection import DetectSettings, evaluate_detection
    from faceveil.eval.utility import UtilityEvaluator

    sample = shared_data / "imagenet-sample"
    with (sample / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:: 1000 // 25][:25]
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cache, out, figures = tmp_path / "cache", tmp_path / "out", tmp_path / "t.json"
    args = [
        "eval", "tradeoff", "--detection-set", str(shared_data / "dlib-faces-coco"),
        "--images", str(sample / "images"), "--labels", str(labels),
        "--detectors", "default,yunet", "--thresholds", "own,0.6", "--methods", "blur,pixelate:12",
        "--cache", str(cache), "-o", str(out), "--json", str(figures), "-q", "--threads", "2",
        "--max-drop", "50", "--min-protected", "dlib-faces-coco=0.9",
    ]  # fmt: skip
    assert main(args) == 0
    data = json.loads(figures.read_text())
    assert len(data["points"]) == 2 * 2 * 2
    assert data["primary_sets"] == ["dlib-faces-coco/all"]
    assert data["cache"]["detections_run"] > 0
    assert (out / "tradeoff.png").stat().st_size > 0 and (out / "report.md").is_file()
    by_name = {p["name"]: p for p in data["points"]}

    dataset = load_dataset(shared_data / "dlib-faces-coco")
    evaluator = UtilityEvaluator(sample / "images", labels, cache_dir=cache, threads=2)
    for detector, threshold in (("default", None), ("yunet", 0.6)):
        single = evaluate_detection(dataset, DetectSettings(detector, threshold), ["all"], jobs=1)
        label = "own" if threshold is None else f"{threshold:g}"
        point = by_name[f"{detector}@{label} blur ellipse m0.35"]
        assert point["protected"]["dlib-faces-coco/all"] == pytest.approx(single.sets["all"].protected)
        assert point["precision"]["dlib-faces-coco/all"] == pytest.approx(single.sets["all"].precision)
        u = evaluator.evaluate(Anonymizer(detector, threshold=threshold, threads=2))
        assert point["top1_drop"] == pytest.approx(u.top1_drop, abs=1e-6)
        assert point["top1_drop_ci"] == pytest.approx(list(u.top1_drop_ci), abs=1e-6)
        assert point["utility"]["touched"] == u.touched and point["utility"]["faces"] == u.faces
        assert 0 <= point["reid_share"] <= 0.05 and point["reid"]["faces"] > 20
        assert point["meets_goals"] is True
    # A second sweep with other methods and margins runs no detector at all.
    args2 = [a if a != "blur,pixelate:12" else "box" for a in args] + ["--margins", "0.1"]
    assert main(args2) == 0
    again = json.loads(figures.read_text())
    assert again["cache"]["detections_run"] == 0
    assert not math.isnan(again["points"][0]["top1_drop"])


# --- the verified detectors -------------------------------------------------------------------------------


class Fixed:
    """A detector that returns the given faces (any threshold), counting calls."""

    def __init__(self, faces: list[Face], name: str = "fixed") -> None:
        self.faces = faces
        self.name = name
        self.calls = 0

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        self.calls += 1
        return [f for f in self.faces if threshold is None or f.score >= threshold]


def test_square_crop_maps_the_box() -> None:
    from faceveil.detectors.verify import square_crop

    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[40:60, 150:170] = 255  # a 20 px white square
    crop, box = square_crop(rgb, (150.0, 40.0, 20.0, 20.0), 2.0, 80)
    assert crop.shape == (80, 80, 3)
    np.testing.assert_allclose(box, [20.0, 20.0, 40.0, 40.0])
    assert crop[25:55, 25:55].min() > 200 and crop[:15].max() == 0
    # Beyond the image: black. A large face is shrunk with area averaging first, and still lands right.
    crop, box = square_crop(rgb, (-10.0, -10.0, 100.0, 100.0), 2.0, 40)
    np.testing.assert_allclose(box, [10.0, 10.0, 20.0, 20.0])
    assert crop[:8].max() == 0


def test_verified_keeps_small_and_confirmed_faces(astronaut: np.ndarray) -> None:
    from faceveil.detectors.verify import VerifiedDetector
    from faceveil.detectors.yunet import YuNet

    face = Face((178.0, 58.0, 92.0, 119.0), 0.9, "fixed")  # the astronaut's face
    wall = Face((400.0, 380.0, 80.0, 100.0), 0.9, "fixed")  # no face there
    tiny = Face((20.0, 20.0, 12.0, 14.0), 0.9, "fixed")  # too small to check: kept
    thin = Face((300.0, 10.0, 5.0, 200.0), 0.9, "fixed")  # not a face's shape: dropped
    base = Fixed([face, wall, tiny, thin])
    checker = YuNet(threads=1)
    verified = VerifiedDetector(base, [([checker], 0.6)], min_height=32)
    assert verified.detect(astronaut) == [face, tiny]
    # detect_with takes the base's faces from elsewhere (a cache), and the checks are memoised.
    calls = base.calls
    assert verified.detect_with(astronaut, None, lambda d, t: d.detect(astronaut, t)) == [face, tiny]
    assert base.calls == calls + 1
    # Every check must pass: a second check nothing can meet drops the large faces.
    strict = VerifiedDetector(base, [([checker], 0.6), ([Fixed([])], 0.1)], min_height=32)
    assert strict.detect(astronaut) == [tiny]


def test_balanced_preset_is_registered_and_caches_through_the_sweep(astronaut: np.ndarray) -> None:
    from faceveil import detectors

    info = detectors.registered()["balanced"]
    assert info.preset
    assert info.available() is True
    detector = detectors.create("balanced", threads=1)
    sweep = SweepDetector(detector, DetectionCache(None))
    for threshold in (None, 0.5, 0.9):
        assert sweep.detect(astronaut, threshold) == detector.detect(astronaut, threshold)
    assert len(detector.detect(astronaut)) == 1
