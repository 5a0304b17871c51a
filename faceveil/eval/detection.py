"""Detection quality against ground truth: AP, recall and precision at the operating point, ``protected``.

One detection pass per image gives two sets of faces:

- the **curve** set, every face down to a low score (``LOW_SCORE``), for the precision-recall curve
  and AP (AP needs the whole score range);
- the **operating** set, what ``faceveil run`` hides with the same settings (the given threshold, or
  each detector's own default), for recall, precision and ``protected``.

Both come from the same network outputs: a detector's faces at threshold T are its faces at a lower
threshold that score at least T (score thresholding and greedy NMS commute: a box is only ever
suppressed by a higher-scoring one), and a fused detector's operating faces are its members' operating
faces fused again. Detectors that do not say their default threshold are simply run twice.

Matching (AP and recall) follows WIDER FACE's rule, which is Pascal VOC's with "difficult" read as
"ignored": detections are taken in score order; each goes to the ground-truth box it overlaps most; at
IoU >= 0.5 that is a hit if the face counts and is not found yet, nothing at all (neither true nor false
positive) if the face is ignored, and a false positive if the face was found already; below 0.5 it is a
false positive. AP is the area under the monotone precision envelope (all points).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.anonymizer import Anonymizer
from faceveil.detectors.fusion import FusedDetector, fuse_faces
from faceveil.errors import FaceveilError, InputError
from faceveil.eval.datasets import Dataset
from faceveil.eval.metrics import SIZE_BINS, ProtectionTally, coverage, iou_matrix
from faceveil.methods.regions import region_for
from faceveil.types import Face, HiddenFace

LOW_SCORE = 0.02
"""Faces down to this score make the precision-recall curve."""
IOU = 0.5
_ONE_PIXEL = np.array([0.0, 0.0, 1.0, 1.0])


# --- one image ------------------------------------------------------------------------------------------


def detect_two_levels(
    detector: Any, rgb: np.ndarray, threshold: float | None, low: float = LOW_SCORE
) -> tuple[list[Face], list[Face]]:
    """(curve faces down to ``low``, operating faces at ``threshold`` or the detector's default)."""
    if isinstance(detector, FusedDetector) and detector.vote is None:
        curve, operating = [], []
        for member in detector.members:
            c, o = detect_two_levels(member, rgb, threshold, low)
            curve.extend(c)
            operating.extend(o)
        return fuse_faces(curve, detector.iou), fuse_faces(operating, detector.iou)
    own = threshold if threshold is not None else _default_threshold(detector)
    if own is None:  # a detector that does not tell its default: ask it twice
        return detector.detect(rgb, min(low, 1.0)), detector.detect(rgb, None)
    curve = detector.detect(rgb, min(low, own))
    return curve, [f for f in curve if f.score >= own]


def _default_threshold(detector: Any) -> float | None:
    value = getattr(detector, "threshold", None)
    return float(value) if isinstance(value, int | float) else None


def describe_threshold(detector: Any, threshold: float | None) -> str:
    """The operating threshold in words, e.g. ``yunet 0.3, centerface 0.2`` for the default detector
    (a voting detector's is its agreement, e.g. ``thorough 0.23``)."""
    if threshold is not None:
        return f"{threshold:g}"
    if isinstance(detector, FusedDetector) and detector.vote is None:
        return ", ".join(describe_threshold(m, None) for m in detector.members)
    own = _default_threshold(detector)
    name = getattr(detector, "name", type(detector).__name__)
    return f"{name} {own:g}" if own is not None else f"{name} default"


def match(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    ignore: np.ndarray,
    iou: float = IOU,
    inclusive: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """WIDER/VOC matching of one image: per detection 1 hit, 0 false positive, -1 ignored; per face: found.

    ``inclusive`` measures IoU on pixel-inclusive boxes (one pixel added to width and height), as the
    official WIDER FACE and Pascal VOC evaluations do; otherwise on continuous boxes, as COCO does.
    """
    return label_matches(
        np.argsort(-det_scores, kind="stable"), *best_overlap(det_boxes, gt_boxes, iou, inclusive), ignore
    )


def best_overlap(
    det_boxes: np.ndarray, gt_boxes: np.ndarray, iou: float = IOU, inclusive: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection: the ground-truth box it overlaps most, and whether that IoU reaches ``iou``."""
    if not len(det_boxes) or not len(gt_boxes):
        return np.zeros(len(det_boxes), np.int64), np.zeros(len(det_boxes), bool)
    if inclusive:
        det_boxes = det_boxes + _ONE_PIXEL
        gt_boxes = gt_boxes + _ONE_PIXEL
    overlaps = iou_matrix(det_boxes, gt_boxes)
    best = np.argmax(overlaps, axis=1)
    return best, overlaps[np.arange(len(best)), best] >= iou


def label_matches(
    order: np.ndarray, best: np.ndarray, reached: np.ndarray, ignore: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and found faces from :func:`best_overlap`, taking detections in ``order`` (best first)."""
    labels = np.zeros(len(best), np.int8)
    found = np.zeros(len(ignore), bool)
    taken = order[reached[order]]
    target = best[taken]
    ignored = ignore[target]
    labels[taken[ignored]] = -1
    kept, kept_target = taken[~ignored], target[~ignored]
    faces, first = np.unique(kept_target, return_index=True)  # the first detection to reach a face finds it
    labels[kept[first]] = 1
    found[faces] = True
    return labels, found


def average_precision(
    scores: np.ndarray, labels: np.ndarray, faces: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """AP, and the precision and recall at each distinct score, from matched detections of a whole set."""
    keep = labels >= 0
    scores, hits = np.asarray(scores, np.float64)[keep], np.asarray(labels)[keep] == 1
    if faces == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    recall = tp / faces
    precision = tp / np.maximum(tp + fp, 1)
    # Area under the envelope: the best precision at this recall or beyond, times each recall step.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * envelope)), precision, recall


# --- a whole set ------------------------------------------------------------------------------------------


@dataclass
class ImageDetections:
    """What the detector found in one dataset image."""

    name: str
    width: int
    height: int
    curve: list[Face]
    operating: list[Face]


@dataclass
class SetResult:
    """Figures for one set (``easy``/``medium``/``hard`` of WIDER FACE, else ``all``)."""

    name: str
    faces: int = 0
    images: int = 0
    ap: float = float("nan")
    recall: float = float("nan")
    precision: float = float("nan")
    protected: float = float("nan")
    regions: int = 0
    matched_regions: int = 0
    found: int = 0
    protected_faces: int = 0
    by_size: dict[str, dict[str, float]] = field(default_factory=dict)
    curve_precision: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_recall: np.ndarray = field(default_factory=lambda: np.zeros(0))
    official_ap: float | None = None
    curve_point_precision: float = float("nan")
    """Precision at the operating point by the AP's matching (ignored faces' detections left out)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "faces": self.faces,
            "images": self.images,
            "ap": _num(self.ap),
            "recall": _num(self.recall),
            "precision": _num(self.precision),
            "protected": _num(self.protected),
            "found": self.found,
            "protected_faces": self.protected_faces,
            "curve_point_precision": _num(self.curve_point_precision),
            "regions": self.regions,
            "matched_regions": self.matched_regions,
            "protected_by_size": {
                k: {"faces": v["faces"], "protected": _num(v["protected"]), "recall": _num(v["recall"])}
                for k, v in self.by_size.items()
            },
        }
        if self.official_ap is not None:
            out["official_ap"] = _num(self.official_ap)
            out["ap_difference"] = _num(self.ap - self.official_ap)
        return out


@dataclass
class DetectionResult:
    """Everything ``faceveil eval detection`` measured."""

    dataset: Dataset
    detector: str
    threshold: float | None
    operating_threshold: str
    shape: str
    margin: float
    sets: dict[str, SetResult]
    detections: list[ImageDetections]
    seconds: float
    official: dict[str, Any] | None = None
    low_score: float = LOW_SCORE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": {
                "path": str(self.dataset.root),
                "format": self.dataset.format,
                "images": len(self.dataset.images),
                "warnings": list(self.dataset.warnings),
            },
            "detector": self.detector,
            "threshold": self.threshold,
            "operating_threshold": self.operating_threshold,
            "curve_min_score": self.low_score,
            "shape": self.shape,
            "margin": self.margin,
            "iou": IOU,
            "iou_boxes": "pixel-inclusive" if pixel_inclusive(self.dataset) else "continuous",
            "min_coverage": 0.8,
            "sets": {name: s.to_json() for name, s in self.sets.items()},
            "seconds": round(self.seconds, 2),
        }
        if self.official is not None:
            out["official_wider"] = self.official
        return out


def _num(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def pixel_inclusive(dataset: Dataset) -> bool:
    """Whether AP and recall use pixel-inclusive IoU: as the format's own official evaluation does.

    WIDER FACE's evaluation (``boxoverlap.m`` / ``bbox_overlaps``) and Pascal VOC's devkit
    (``VOCevaldet.m``) add one pixel to each box's width and height; COCO's does not. On tiny faces
    this moves AP: on WIDER's hard set, by about 0.03 for the default detector.
    """
    return dataset.format in ("wider", "voc")


def evaluate(
    dataset: Dataset,
    detections: Sequence[ImageDetections],
    sets: Sequence[str],
    shape: str = "ellipse",
    margin: float = 0.35,
) -> dict[str, SetResult]:
    """Score ``detections`` (in the dataset's image order) against the ground truth of each set."""
    tallies = {s: ProtectionTally() for s in sets}
    curve_scores: list[np.ndarray] = []
    curve_labels: dict[str, list[np.ndarray]] = {s: [] for s in sets}
    found = dict.fromkeys(sets, 0)
    found_by_size = {s: dict.fromkeys((b[0] for b in SIZE_BINS), 0) for s in sets}
    images = dict.fromkeys(sets, 0)
    op_hits = dict.fromkeys(sets, 0)
    op_false = dict.fromkeys(sets, 0)
    inclusive = pixel_inclusive(dataset)
    for gt, det in zip(dataset.images, detections, strict=True):
        curve_boxes, curve_sc = _arrays(det.curve)
        op_boxes, op_sc = _arrays(det.operating)
        curve_scores.append(curve_sc)
        hidden = [
            HiddenFace(f, region_for(f, shape, margin, det.width, det.height))  # type: ignore[arg-type]
            for f in det.operating
        ]
        cov = coverage(gt.boxes, hidden, det.width, det.height)
        curve_order, op_order = np.argsort(-curve_sc, kind="stable"), np.argsort(-op_sc, kind="stable")
        curve_best = best_overlap(curve_boxes, gt.boxes, IOU, inclusive)
        op_best = best_overlap(op_boxes, gt.boxes, IOU, inclusive)
        for s in sets:
            ignore = gt.ignore_by_set[s]
            images[s] += int((~ignore).any())
            labels, _ = label_matches(curve_order, *curve_best, ignore)
            curve_labels[s].append(labels)
            op_labels, hit = label_matches(op_order, *op_best, ignore)
            op_hits[s] += int((op_labels == 1).sum())
            op_false[s] += int((op_labels == 0).sum())
            found[s] += int((hit & ~ignore).sum())
            for name, lo, hi in SIZE_BINS:
                sel = ~ignore & (gt.boxes[:, 3] >= lo) & (gt.boxes[:, 3] < hi)
                found_by_size[s][name] += int((hit & sel).sum())
            tallies[s].add(gt.boxes, ignore, hidden, det.width, det.height, cov=cov)
    results = {}
    all_scores = np.concatenate(curve_scores) if curve_scores else np.zeros(0)
    for s in sets:
        t = tallies[s]
        labels = np.concatenate(curve_labels[s]) if curve_labels[s] else np.zeros(0, np.int8)
        ap, prec, rec = average_precision(all_scores, labels, t.faces)
        results[s] = SetResult(
            name=s,
            faces=t.faces,
            images=images[s],
            ap=ap,
            recall=found[s] / t.faces if t.faces else float("nan"),
            curve_point_precision=op_hits[s] / (op_hits[s] + op_false[s])
            if op_hits[s] + op_false[s]
            else float("nan"),
            precision=t.precision,
            protected=t.protected_share,
            regions=t.regions,
            matched_regions=t.matched_regions,
            found=found[s],
            protected_faces=t.protected,
            by_size={
                name: {
                    "faces": n,
                    "protected": ok / n if n else float("nan"),
                    "recall": found_by_size[s][name] / n if n else float("nan"),
                }
                for name, (n, ok) in t.by_size.items()
            },
            curve_precision=prec,
            curve_recall=rec,
        )
    return results


def _arrays(faces: Sequence[Face]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray([f.bbox for f in faces], np.float64).reshape(-1, 4)
    scores = np.asarray([f.score for f in faces], np.float64).reshape(-1)
    return boxes, scores


# --- running the detector over a dataset ------------------------------------------------------------------


@dataclass(frozen=True)
class DetectSettings:
    detector: str = "default"
    threshold: float | None = None
    shape: str = "ellipse"
    margin: float = 0.35
    low: float = LOW_SCORE


def make_anonymizer(settings: DetectSettings, threads: int | None) -> Anonymizer:
    """The detector and region settings, checked as ``faceveil run`` checks them."""
    return Anonymizer(
        detector=settings.detector,
        shape=settings.shape,  # type: ignore[arg-type]
        margin=settings.margin,
        threshold=settings.threshold,
        threads=threads,
    )


def _detect_file(anon: Anonymizer, settings: DetectSettings, path: Path) -> tuple[int, int, list, list]:
    from faceveil.io.image import read_picture

    try:
        picture = read_picture(path)
    except InputError as exc:
        raise FaceveilError(f"{path}: {exc}") from exc
    curve, operating = detect_two_levels(anon.detector, picture.rgb8(), settings.threshold, settings.low)
    return picture.width, picture.height, curve, operating


_WORKER: tuple[Anonymizer, DetectSettings] | None = None


def _init_worker(settings: DetectSettings) -> None:
    global _WORKER
    _WORKER = (make_anonymizer(settings, threads=1), settings)


def _work(path: Path) -> tuple[int, int, list, list]:
    assert _WORKER is not None
    return _detect_file(_WORKER[0], _WORKER[1], path)


def run_detector(
    dataset: Dataset,
    settings: DetectSettings,
    jobs: int | None = None,
    on_image: Callable[[], None] | None = None,
    anonymizer: Anonymizer | None = None,
) -> list[ImageDetections]:
    """Detect faces in every image of ``dataset`` (in order), in ``jobs`` processes (default: every core)."""
    paths = [gt.path for gt in dataset.images]
    jobs = min(jobs or len(os.sched_getaffinity(0)), len(paths)) or 1
    anon = anonymizer or make_anonymizer(settings, threads=1 if jobs > 1 or len(paths) > 1 else None)
    out = []
    if jobs <= 1:
        for gt in dataset.images:
            w, h, curve, operating = _detect_file(anon, settings, gt.path)
            out.append(ImageDetections(gt.name, w, h, curve, operating))
            if on_image:
                on_image()
        return out
    context = mp.get_context("spawn")
    pool = context.Pool(jobs, initializer=_init_worker, initargs=(settings,))
    try:
        for gt, (w, h, curve, operating) in zip(
            dataset.images, pool.imap(_work, paths, chunksize=1), strict=True
        ):
            out.append(ImageDetections(gt.name, w, h, curve, operating))
            if on_image:
                on_image()
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return out


def official_check(dataset: Dataset, detections: Sequence[ImageDetections]) -> dict[str, Any] | None:
    """WIDER FACE's official AP (re-implemented in :mod:`faceveil.eval.wider_official`) of the curve faces.

    None unless the dataset is WIDER FACE with the official .mat files.
    """
    from faceveil.eval.datasets import find_wider_mats
    from faceveil.eval.wider_official import evaluate as official_evaluate
    from faceveil.eval.wider_official import load_gt

    if dataset.format != "wider":
        return None
    folder = find_wider_mats(dataset.root)
    if folder is None:
        return None
    gt = load_gt(folder)
    results = official_evaluate(wider_predictions(detections), gt)
    return {
        "ground_truth": str(folder),
        "sets": {name: {"ap": _num(r.ap), "faces": r.faces} for name, r in results.items()},
    }


def wider_predictions(detections: Sequence[ImageDetections]) -> dict[tuple[str, str], np.ndarray]:
    """Curve faces as official-tool predictions: {(event, stem): (N, 5) x, y, w, h, score}."""
    out = {}
    for det in detections:
        event, _, file = det.name.rpartition("/")
        boxes, scores = _arrays(det.curve)
        out[(event, file.rsplit(".", 1)[0])] = np.concatenate([boxes, scores[:, None]], axis=1)
    return out


def evaluate_detection(
    dataset: Dataset,
    settings: DetectSettings,
    sets: Sequence[str],
    jobs: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_image: Callable[[], None] | None = None,
    official: bool = True,
) -> DetectionResult:
    """Run the detector over ``dataset`` once and measure every set in ``sets``."""
    started = time.perf_counter()
    anon = make_anonymizer(settings, threads=1)  # a bad setup fails here, before any work
    if on_start:
        on_start(len(dataset.images))
    detections = run_detector(
        dataset, settings, jobs, on_image, anonymizer=anon if (jobs or 0) <= 1 else None
    )
    results = evaluate(dataset, detections, sets, settings.shape, settings.margin)
    check = official_check(dataset, detections) if official else None
    if check is not None:
        for name, figures in check["sets"].items():
            if name in results and figures["ap"] is not None:
                results[name].official_ap = figures["ap"]
        diffs = [abs(r.ap - r.official_ap) for r in results.values() if r.official_ap is not None]
        check["max_difference"] = _num(max(diffs)) if diffs else None
    return DetectionResult(
        dataset=dataset,
        detector=settings.detector,
        threshold=settings.threshold,
        operating_threshold=describe_threshold(anon.detector, settings.threshold),
        shape=settings.shape,
        margin=settings.margin,
        sets=results,
        detections=detections,
        seconds=time.perf_counter() - started,
        official=check,
        low_score=min(settings.low, settings.threshold) if settings.threshold is not None else settings.low,
    )
