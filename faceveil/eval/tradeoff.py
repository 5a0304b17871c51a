"""Privacy against utility: one sweep of detector settings and obfuscation methods, measured on both sides.

For every point of the grid detectors x thresholds x methods x shapes x margins this measures

- on each **detection set** (annotated faces): ``protected`` (the contract's figure), precision and recall
  at the operating point, and, with SFace, the share of hidden faces at least ``min_face`` px tall that
  are still **re-identifiable** (cosine >= 0.363 between the original and the anonymized face, aligned on
  the same landmarks; the audit's ``reid`` figure, :mod:`faceveil.audit.reid`);
- on the **utility set** (labelled ImageNet-style images): the top-1 and top-5 drop of a classifier with
  a paired-bootstrap 95 % interval, McNemar's test and the share of images touched (as
  ``faceveil eval utility`` does; :mod:`faceveil.eval.utility`),

and finds the Pareto front (no other point is at least as good on every figure and better on one).

Every image is decoded once for the whole grid. Detections are cached per (detector, image) at a low
score (:data:`CACHE_SCORE`), in memory and on disk: a detector's faces at threshold T are its faces at
a lower threshold that score at least T (greedy NMS and score thresholding commute), and a fused
detector's faces are its members' faces fused, so a threshold sweep runs each network once per image,
and a second sweep (other methods, margins, thresholds) none at all. Detectors that do not say their
default threshold are cached per threshold. Composite detectors (:mod:`faceveil.detectors.verify`)
answer from their parts' cached faces through ``detect_with``. Classifier scores are cached per
SHA-256 of the pixels, so a point whose hidden regions equal another's (e.g. a higher threshold that
drops no face of that image) costs nothing.

>>> result = run_tradeoff(["wider-val-parade", "facemask-voc"], "imagenet-sample/images",
...                       "imagenet-sample/labels.csv", detectors=["default", "yunet"],
...                       thresholds=[None, 0.5, 0.7], methods=["blur", "pixelate"])
>>> write_outputs(result, Path("tradeoff-out"))
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.detectors.fusion import FusedDetector
from faceveil.errors import FaceveilError, InputError, UsageError
from faceveil.eval.utility import Accuracies
from faceveil.types import Face

CACHE_SCORE = 0.05
"""Leaf detectors' faces are cached down to this score (or the lowest threshold swept, if lower)."""
MIN_FACE = 32.0
"""Re-identification counts hidden faces at least this tall (px), as the audit's limit does."""
OWN = "own"
"""In a threshold list: each detector's own default threshold(s)."""
CACHE_VERSION = 1


# --- settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One setting of the sweep."""

    detector: str
    threshold: float | None
    method: str
    shape: str
    margin: float

    @property
    def threshold_label(self) -> str:
        return OWN if self.threshold is None else f"{self.threshold:g}"

    @property
    def series(self) -> str:
        """What the plot joins into one line: everything but the threshold."""
        return f"{self.detector} {self.method} {self.shape} m{self.margin:g}"

    @property
    def name(self) -> str:
        return f"{self.detector}@{self.threshold_label} {self.method} {self.shape} m{self.margin:g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "threshold": self.threshold,
            "method": self.method,
            "shape": self.shape,
            "margin": self.margin,
        }


def parse_threshold(text: str) -> float | None:
    """``own`` (or ``default``) for each detector's own thresholds, else a number in [0, 1]."""
    text = text.strip()
    if text.lower() in (OWN, "default", "none"):
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise UsageError(f"threshold {text!r}: use a number between 0 and 1, or {OWN}") from exc
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"threshold {text!r}: use a number between 0 and 1, or {OWN}")
    return value


def make_method(spec: str) -> Any:
    """An obfuscation method from ``name`` or ``name:value``.

    The value is the method's main parameter: ``blur:0.1`` (sigma as a share of the region's larger side;
    default 0.2), ``pixelate:12`` (cells across the region; default 8), ``box:128`` (fill value; default 0).
    """
    from faceveil import methods

    name, _, value = spec.strip().partition(":")
    method = methods.create(name)
    if not value:
        return method
    attribute = {"blur": "strength", "pixelate": "cells", "box": "value"}.get(name)
    if attribute is None:
        raise UsageError(f"method {spec!r}: {name} takes no parameter")
    try:
        number = float(value)
    except ValueError as exc:
        raise UsageError(f"method {spec!r}: {value!r} is not a number") from exc
    if number < 0 or (name == "pixelate" and number < 1):
        raise UsageError(f"method {spec!r}: {value} is out of range")
    setattr(method, attribute, int(number) if name in ("pixelate", "box") else number)
    return method


def grid(
    detectors: Sequence[str],
    thresholds: Sequence[float | None],
    methods: Sequence[str],
    shapes: Sequence[str],
    margins: Sequence[float],
) -> list[Point]:
    """Every combination, in a stable order (detector, method, shape, margin, threshold)."""
    points = [
        Point(d, t, m, s, g)
        for d in detectors
        for m in methods
        for s in shapes
        for g in margins
        for t in thresholds
    ]
    return list(dict.fromkeys(points))


# --- detections, cached -----------------------------------------------------------------------------------


def image_key(rgb: np.ndarray) -> str:
    """A digest of the decoded pixels (and their shape): the cache key of one image."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((rgb.shape, str(rgb.dtype))).encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def detector_identity(detector: Any) -> str:
    """What makes a detector's output: its class and its settings (not its threshold or thread count)."""
    kind = type(detector)
    parts = [f"{kind.__module__}.{kind.__qualname__}", f"source={_source_digest(kind)}"]
    for key, value in sorted(getattr(detector, "__dict__", {}).items()):
        if key.startswith("_") or key in ("threshold", "threads"):
            continue
        if value is None or isinstance(value, bool | int | float | str):
            parts.append(f"{key}={value!r}")
        elif isinstance(value, tuple | list) and all(
            v is None or isinstance(v, bool | int | float | str) for v in value
        ):
            parts.append(f"{key}={tuple(value)!r}")
        elif hasattr(value, "detect"):
            parts.append(f"{key}=({detector_identity(value)})")
        elif isinstance(value, tuple | list) and all(hasattr(v, "detect") for v in value):
            parts.append(f"{key}=[{', '.join(detector_identity(v) for v in value)}]")
    return "; ".join(parts)


@functools.cache
def _source_digest(kind: type) -> str:
    """A digest of the file defining ``kind``: editing a detector's code invalidates its cached faces."""
    try:
        return hashlib.sha256(Path(inspect.getfile(kind)).read_bytes()).hexdigest()[:12]
    except (OSError, TypeError):
        return "unknown"


def _own_threshold(detector: Any) -> float | None:
    value = getattr(detector, "threshold", None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _face_to_row(face: Face) -> list[Any]:
    return [*face.bbox, face.score, face.detector, None if face.landmarks is None else list(face.landmarks)]


def _face_from_row(row: list[Any]) -> Face:
    x, y, w, h, score, name, marks = row
    landmarks = None if marks is None else tuple((float(a), float(b)) for a, b in marks)
    return Face((float(x), float(y), float(w), float(h)), float(score), str(name), landmarks)


class DetectionCache:
    """Faces per (detector identity, image key, level), in memory and in one JSON-lines file per detector.

    A level is ``low`` (every face down to the stored floor; any threshold at or above it is a filter) or
    ``thr:T`` (the faces at exactly threshold T, for detectors whose default threshold is unknown).
    Floats are written in full (``repr``), so cached faces equal computed ones to the bit.
    """

    def __init__(self, root: Path | None) -> None:
        self.folder = None if root is None else Path(root) / "tradeoff" / f"detections-v{CACHE_VERSION}"
        self._tables: dict[str, dict[tuple[str, str], tuple[float, list[Face]]]] = {}
        self.hits = 0
        self.misses = 0

    def _file(self, identity: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.jsonl"

    def _table(self, identity: str) -> dict[tuple[str, str], tuple[float, list[Face]]]:
        table = self._tables.get(identity)
        if table is not None:
            return table
        table = {}
        path = self._file(identity)
        if path is not None and path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                lines = []
            if lines and _json_or_none(lines[0]) == {"detector": identity}:
                for line in lines[1:]:
                    entry = _json_or_none(line)
                    try:
                        faces = [_face_from_row(r) for r in entry["faces"]]  # type: ignore[index]
                        table[(entry["image"], entry["level"])] = (float(entry["floor"]), faces)  # type: ignore[index]
                    except (TypeError, KeyError, ValueError):
                        continue  # a torn or foreign line only costs a detection
        self._tables[identity] = table
        return table

    def get(self, identity: str, image: str, level: str) -> tuple[float, list[Face]] | None:
        found = self._table(identity).get((image, level))
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, identity: str, image: str, level: str, floor: float, faces: list[Face]) -> None:
        self._table(identity)[(image, level)] = (floor, faces)
        path = self._file(identity)
        if path is None:
            return
        line = json.dumps(
            {"image": image, "level": level, "floor": floor, "faces": [_face_to_row(f) for f in faces]}
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not path.exists()
            with path.open("a", encoding="utf-8") as fh:
                if fresh:
                    fh.write(json.dumps({"detector": identity}) + "\n")
                fh.write(line + "\n")
        except OSError:
            pass  # a cache that cannot be written only costs time


def _json_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


class SweepDetector:
    """A detector whose answers come from :class:`DetectionCache` (filled on a miss).

    ``detect(rgb, threshold)`` returns exactly what the wrapped detector would: fused detectors are
    resolved member by member and fused again; composite detectors (those with ``detect_with``) get
    their parts resolved the same way; every other detector is a leaf, run once per image at a low score.
    """

    def __init__(self, detector: Any, cache: DetectionCache, floor: float = CACHE_SCORE) -> None:
        self.detector = detector
        self.cache = cache
        self.floor = floor
        self.name = getattr(detector, "name", type(detector).__name__)
        self._identities: dict[int, str] = {}

    def detect(self, rgb: np.ndarray, threshold: float | None = None, key: str | None = None) -> list[Face]:
        key = key or image_key(rgb)
        return self._faces(self.detector, rgb, key, threshold)

    def _faces(self, detector: Any, rgb: np.ndarray, key: str, threshold: float | None) -> list[Face]:
        if isinstance(detector, FusedDetector):
            member = detector.member_threshold(threshold)
            return detector.combine([self._faces(m, rgb, key, member) for m in detector.members], threshold)
        compose = getattr(detector, "detect_with", None)
        if compose is not None:
            return compose(rgb, threshold, lambda part, t: self._faces(part, rgb, key, t))
        identity = self._identities.get(id(detector))
        if identity is None:
            identity = self._identities[id(detector)] = detector_identity(detector)
        own = _own_threshold(detector)
        if own is None:  # default threshold unknown: cache each threshold asked for
            level = f"thr:{threshold!r}"
            hit = self.cache.get(identity, key, level)
            if hit is None:
                faces = detector.detect(rgb, threshold)
                self.cache.put(identity, key, level, math.nan, faces)
                return faces
            return hit[1]
        wanted = own if threshold is None else threshold
        hit = self.cache.get(identity, key, "low")
        if hit is None or hit[0] > wanted:
            floor = min(self.floor, wanted)
            hit = (floor, detector.detect(rgb, floor))
            self.cache.put(identity, key, "low", floor, hit[1])
        return [f for f in hit[1] if f.score >= wanted]


# --- results ----------------------------------------------------------------------------------------------


@dataclass
class SetFigures:
    """One detection set's figures at one point (``protected`` etc. are fractions)."""

    protected: float
    precision: float
    recall: float
    faces: int
    regions: int
    by_size: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "protected": _num(self.protected),
            "precision": _num(self.precision),
            "recall": _num(self.recall),
            "faces": self.faces,
            "regions": self.regions,
            "protected_by_size": {
                k: {"faces": v["faces"], "protected": _num(v["protected"])} for k, v in self.by_size.items()
            },
        }


REID_FIGURES = ("share", "true_share", "identified_share")
"""``share``: of every hidden face >= min_face (the audit's gate); ``true_share``: of those overlapping a
ground-truth face (IoU >= 0.5, ignored faces included); ``identified_share``: matched and rank-1 among
the originals of all faces measured at the point (the audit's ``identified_share``)."""


@dataclass
class Reid:
    """Hidden faces at least ``min_face`` tall, and how many a face recogniser still matches.

    A blurred false detection (a flag, a hat) still resembles its own blurred original, so ``share``
    counts false positives too; ``true_share`` keeps to real faces.
    """

    threshold: float = 0.363
    cosines: list[float] = field(default_factory=list, repr=False)
    true_face: list[bool] = field(default_factory=list, repr=False)
    embeddings: list[np.ndarray] = field(default_factory=list, repr=False)
    landmarks: dict[str, int] = field(default_factory=dict)
    identified: np.ndarray | None = field(default=None, repr=False)

    def add(self, cosine: float, true_face: bool, pair: np.ndarray | None, landmarks: str) -> None:
        self.cosines.append(cosine)
        self.true_face.append(true_face)
        if pair is not None:
            self.embeddings.append(pair)
        self.landmarks[landmarks] = self.landmarks.get(landmarks, 0) + 1

    @classmethod
    def merged(cls, parts: Iterable[Reid], threshold: float) -> Reid:
        out = cls(threshold)
        for part in parts:
            out.cosines += part.cosines
            out.true_face += part.true_face
            out.embeddings += part.embeddings
            for k, v in part.landmarks.items():
                out.landmarks[k] = out.landmarks.get(k, 0) + v
        out.rank()
        return out

    def rank(self) -> None:
        """Rank-1 identification of each face among every original measured here."""
        from faceveil.audit.reid import rank_one

        if len(self.embeddings) != len(self.cosines) or not self.embeddings:
            return
        stacked = np.stack(self.embeddings)
        self.identified = rank_one(stacked[:, 0], stacked[:, 1])

    @property
    def faces(self) -> int:
        return len(self.cosines)

    @property
    def matched(self) -> int:
        return int(np.sum(np.asarray(self.cosines) >= self.threshold)) if self.cosines else 0

    @property
    def share(self) -> float:
        return self.matched / self.faces if self.faces else float("nan")

    @property
    def true_faces(self) -> int:
        return int(np.sum(self.true_face))

    @property
    def true_matched(self) -> int:
        if not self.cosines:
            return 0
        return int(np.sum((np.asarray(self.cosines) >= self.threshold) & np.asarray(self.true_face)))

    @property
    def true_share(self) -> float:
        return self.true_matched / self.true_faces if self.true_faces else float("nan")

    @property
    def identified_count(self) -> int | None:
        if self.identified is None:
            return None
        return int(np.sum((np.asarray(self.cosines) >= self.threshold) & self.identified))

    @property
    def identified_share(self) -> float:
        count = self.identified_count
        return count / self.faces if count is not None and self.faces else float("nan")

    def figure(self, name: str) -> float:
        return float(getattr(self, name))

    def to_json(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "matched": self.matched,
            "share": _num(self.share),
            "true_faces": self.true_faces,
            "true_matched": self.true_matched,
            "true_share": _num(self.true_share),
            "identified": self.identified_count,
            "identified_share": _num(self.identified_share),
            "mean_cosine": _num(float(np.mean(self.cosines))) if self.cosines else None,
            "max_cosine": _num(float(np.max(self.cosines))) if self.cosines else None,
            "landmarks": dict(self.landmarks),
        }


@dataclass
class UtilityFigures(Accuracies):
    """The utility set's figures at one point (fractions; a drop is originals - anonymized)."""

    mcnemar_p: float
    correct_to_wrong: int
    wrong_to_correct: int
    touched: int
    faces: int
    flipped: list[str] = field(default_factory=list)
    gained: list[str] = field(default_factory=list)

    @property
    def touched_share(self) -> float:
        return self.touched / self.images if self.images else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "top1_originals": _num(self.top1_originals),
            "top1_anonymized": _num(self.top1_anonymized),
            "top1_drop": _num(self.top1_drop),
            "top1_drop_ci": [_num(self.top1_drop_ci[0]), _num(self.top1_drop_ci[1])],
            "top5_originals": _num(self.top5_originals),
            "top5_anonymized": _num(self.top5_anonymized),
            "top5_drop": _num(self.top5_drop),
            "top5_drop_ci": [_num(self.top5_drop_ci[0]), _num(self.top5_drop_ci[1])],
            "mcnemar_p": _num(self.mcnemar_p),
            "correct_to_wrong": self.correct_to_wrong,
            "wrong_to_correct": self.wrong_to_correct,
            "touched": self.touched,
            "touched_share": _num(self.touched_share),
            "faces": self.faces,
            "flipped": self.flipped,
            "gained": self.gained,
        }


@dataclass
class PointResult:
    """Everything measured at one point; ``sets`` is keyed ``<detection set>/<subset>``."""

    point: Point
    sets: dict[str, SetFigures] = field(default_factory=dict)
    reid: Reid | None = None
    reid_by_set: dict[str, Reid] = field(default_factory=dict)
    utility: UtilityFigures | None = None
    pareto: bool = False
    meets: bool | None = None

    def protected(self, name: str) -> float:
        return self.sets[name].protected if name in self.sets else float("nan")

    def to_json(self, primary: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.point.name, **self.point.to_json()}
        out["protected"] = {k: _num(self.sets[k].protected) for k in primary if k in self.sets}
        out["precision"] = {k: _num(self.sets[k].precision) for k in primary if k in self.sets}
        out["recall"] = {k: _num(self.sets[k].recall) for k in primary if k in self.sets}
        if self.utility is not None:
            u = self.utility
            out["top1_drop"] = _num(u.top1_drop)
            out["top1_drop_ci"] = [_num(u.top1_drop_ci[0]), _num(u.top1_drop_ci[1])]
            out["touched_share"] = _num(u.touched_share)
        if self.reid is not None:
            out["reid_share"] = _num(self.reid.share)
            out["reid_true_share"] = _num(self.reid.true_share)
            out["reid_identified_share"] = _num(self.reid.identified_share)
        out["pareto"] = self.pareto
        if self.meets is not None:
            out["meets_goals"] = self.meets
        out["sets"] = {k: v.to_json() for k, v in self.sets.items()}
        if self.reid is not None:
            by_set = {k: v.to_json() for k, v in self.reid_by_set.items()}
            out["reid"] = {**self.reid.to_json(), "by_set": by_set}
        if self.utility is not None:
            out["utility"] = self.utility.to_json()
        return out


@dataclass
class Goals:
    """Optional targets: the report marks the points that meet every one."""

    max_top1_drop: float | None = None
    """As a fraction (0.01 = 1 point)."""
    min_protected: dict[str, float] = field(default_factory=dict)
    """By set name (``wider-val-parade/hard``); a bare dataset name means each of its primary subsets."""
    max_reid_share: float | None = None
    """Applies to ``reid_figure`` (one of :data:`REID_FIGURES`)."""
    reid_figure: str = "share"

    def empty(self) -> bool:
        return self.max_top1_drop is None and not self.min_protected and self.max_reid_share is None

    def check(self, r: PointResult, primary: Sequence[str]) -> bool:
        if self.max_top1_drop is not None and (r.utility is None or r.utility.top1_drop > self.max_top1_drop):
            return False
        if self.max_reid_share is not None and (
            r.reid is None or not r.reid.figure(self.reid_figure) <= self.max_reid_share
        ):
            return False
        for name, low in self.min_protected.items():
            names = [p for p in primary if p == name or p.split("/")[0] == name]
            if not names or any(not r.protected(n) >= low for n in names):
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "max_top1_drop": self.max_top1_drop,
            "min_protected": dict(self.min_protected),
            "max_reid_share": self.max_reid_share,
            "reid_figure": self.reid_figure,
        }


@dataclass
class TradeoffResult:
    """The sweep: its points' figures, the sets measured and how long it took."""

    points: list[PointResult]
    detection_sets: dict[str, dict[str, Any]]
    primary: list[str]
    """The detection subsets shown in the table and the plot (WIDER FACE: the chosen difficulty)."""
    utility: dict[str, Any] | None
    reid_settings: dict[str, Any] | None
    goals: Goals = field(default_factory=Goals)
    seconds: float = 0.0
    cache: dict[str, Any] = field(default_factory=dict)

    def pareto_front(self) -> list[PointResult]:
        return [p for p in self.points if p.pareto]

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": "faceveil eval tradeoff",
            "detection_sets": self.detection_sets,
            "primary_sets": self.primary,
            "utility_set": self.utility,
            "reid_settings": self.reid_settings,
            "goals": None if self.goals.empty() else self.goals.to_json(),
            "objectives": objective_names(self),
            "points": [p.to_json(self.primary) for p in self.points],
            "pareto_front": [p.point.name for p in self.pareto_front()],
            "meeting_goals": [p.point.name for p in self.points if p.meets],
            "seconds": round(self.seconds, 1),
            "cache": self.cache,
        }


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


# --- Pareto front -----------------------------------------------------------------------------------------


def objective_names(result: TradeoffResult) -> list[str]:
    names = [f"protected {s} (higher)" for s in result.primary]
    if result.utility is not None:
        names.append("top1_drop (lower)")
    if result.reid_settings is not None:
        names.append(f"reid {result.goals.reid_figure} (lower)")
    return names


def _objectives(r: PointResult, primary: Sequence[str], utility: bool, reid: str | None) -> np.ndarray:
    """Figures to maximise (drops and shares negated); NaN counts as worst."""
    values = [r.protected(s) for s in primary]
    if utility:
        values.append(-r.utility.top1_drop if r.utility else math.nan)
    if reid:
        values.append(-r.reid.figure(reid) if r.reid and r.reid.faces else math.nan)
    return np.nan_to_num(np.asarray(values, np.float64), nan=-np.inf)


def mark_pareto(result: TradeoffResult) -> None:
    """Set ``pareto`` on every point no other point dominates (figures rounded to 4 decimals)."""
    utility = result.utility is not None
    reid = result.goals.reid_figure if result.reid_settings is not None else None
    values = [np.round(_objectives(p, result.primary, utility, reid), 4) for p in result.points]
    for i, p in enumerate(result.points):
        p.pareto = not any(
            np.all(other >= values[i]) and np.any(other > values[i])
            for j, other in enumerate(values)
            if j != i
        )


# --- detection sets ---------------------------------------------------------------------------------------


def _load_sets(paths: Sequence[Path | str], difficulty: str) -> list[tuple[str, Any, list[str]]]:
    """(name, dataset, primary subsets) of each detection set; names are the folders' (made unique)."""
    from faceveil.eval.datasets import load_dataset

    out = []
    used: set[str] = set()
    for path in paths:
        dataset = load_dataset(Path(path))
        name = dataset.root.resolve().name
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        if difficulty == "all" or difficulty not in dataset.sets:
            primary = list(dataset.sets)
        else:
            primary = [difficulty]
        out.append((name, dataset, primary))
    return out


class _Reid:
    """SFace and the landmark fallback, loaded once."""

    def __init__(self, threads: int | None, threshold: float) -> None:
        from faceveil.audit.reid import Landmarker, SFace

        self.sface = SFace(threads)
        self.landmarker = Landmarker(threads)
        self.threshold = threshold

    def rows(self, rgb: np.ndarray, faces: Sequence[Face]) -> list[tuple[np.ndarray, str]]:
        from faceveil.audit.reid import face_row

        out = []
        for face in faces:
            if face.landmarks is not None and len(face.landmarks) == 5:
                marks, source = face.landmarks, "record"
            else:
                marks, source = self.landmarker(rgb, face.bbox)
            out.append((face_row(face.bbox, marks, face.score), source))
        return out


def _detection_pass(
    name: str,
    dataset: Any,
    points: Sequence[Point],
    sweepers: dict[str, SweepDetector],
    method_objects: dict[str, Any],
    reid: _Reid | None,
    min_face: float,
    progress: bool,
) -> tuple[dict[Point, dict[str, SetFigures]], dict[Point, Reid]]:
    """One pass over a detection set: every point's faces, protection figures and re-identification."""
    from faceveil.eval.detection import ImageDetections, evaluate
    from faceveil.io.image import read_picture
    from faceveil.methods.regions import region_for

    det_keys = sorted({(p.detector, p.threshold) for p in points}, key=lambda k: (k[0], k[1] or -1.0))
    found: dict[tuple[str, float | None], list[ImageDetections]] = {k: [] for k in det_keys}
    reids = {p: Reid(reid.threshold) for p in points} if reid is not None else {}
    for gt in _bar(dataset.images, f"detecting {name}", progress):
        try:
            picture = read_picture(gt.path)
        except InputError as exc:
            raise FaceveilError(f"{gt.path}: {exc}") from exc
        rgb = picture.rgb8()
        key = image_key(rgb)
        height, width = rgb.shape[:2]
        faces_at: dict[tuple[str, float | None], list[Face]] = {}
        for det, thr in det_keys:
            faces_at[(det, thr)] = sweepers[det].detect(rgb, thr, key)
            found[(det, thr)].append(ImageDetections(gt.name, width, height, [], faces_at[(det, thr)]))
        if reid is None:
            continue
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        originals: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, str]] = {}
        anonymized: dict[tuple[Any, ...], np.ndarray] = {}
        for p in points:
            faces = faces_at[(p.detector, p.threshold)]
            tall = [f for f in faces if f.bbox[3] >= min_face]
            if not tall:
                continue
            for face, (row, source) in zip(tall, reid.rows(rgb, tall), strict=True):
                fkey = (face.bbox, face.landmarks)
                if fkey not in originals:
                    crop = reid.sface.align(bgr, row)
                    originals[fkey] = (row, reid.sface.embed([crop])[0], source)
            akey = (tuple(f.bbox for f in faces), p.method, p.shape, p.margin)
            if akey not in anonymized:
                pixels = rgb.copy()
                regions = [region_for(f, p.shape, p.margin, width, height) for f in faces]  # type: ignore[arg-type]
                method_objects[p.method].apply(pixels, regions)
                anonymized[akey] = np.ascontiguousarray(pixels[:, :, ::-1])
            anon_bgr = anonymized[akey]
            crops = [reid.sface.align(anon_bgr, originals[(f.bbox, f.landmarks)][0]) for f in tall]
            embedded = reid.sface.embed(crops)
            r = reids[p]
            truth = _overlaps_truth(tall, gt.boxes)
            for face, emb, true_face in zip(tall, embedded, truth, strict=True):
                _, original, source = originals[(face.bbox, face.landmarks)]
                cosine = float(np.dot(original, emb))
                r.add(cosine, bool(true_face), np.stack([original, emb]).astype(np.float32), source)
    figures: dict[Point, dict[str, SetFigures]] = {}
    sets = list(dataset.sets)
    by_region: dict[tuple[Any, ...], dict[str, SetFigures]] = {}
    for p in points:
        rkey = (p.detector, p.threshold, p.shape, p.margin)
        if rkey not in by_region:
            results = evaluate(dataset, found[(p.detector, p.threshold)], sets, p.shape, p.margin)
            by_region[rkey] = {
                f"{name}/{s}": SetFigures(
                    protected=r.protected,
                    precision=r.precision,
                    recall=r.recall,
                    faces=r.faces,
                    regions=r.regions,
                    by_size=r.by_size,
                )
                for s, r in results.items()
            }
        figures[p] = by_region[rkey]
    return figures, reids


def _overlaps_truth(faces: Sequence[Face], boxes: np.ndarray) -> np.ndarray:
    """Per face: IoU >= 0.5 with some ground-truth box (ignored ones included, as precision counts)."""
    from faceveil.eval.metrics import iou_matrix

    if not len(boxes) or not faces:
        return np.zeros(len(faces), bool)
    return iou_matrix(np.asarray([f.bbox for f in faces], np.float64), boxes).max(axis=1) >= 0.5


# --- utility set ------------------------------------------------------------------------------------------


class _PixelScores:
    """Classifier scores of anonymized images, by SHA-256 of their RGB pixels (memory and disk)."""

    def __init__(self, evaluator: Any) -> None:
        from faceveil.eval.utility import ScoreCache

        self.classifier = evaluator.classifier
        folder = evaluator.cache.folder
        root = None if folder is None else folder.parent.parent
        self.disk = ScoreCache(root, self.classifier.identity + "-pixels")
        self.memory: dict[str, np.ndarray] = {}
        self.pending: dict[str, np.ndarray] = {}
        self.classified = 0

    def get(self, digest: str) -> np.ndarray | None:
        found = self.memory.get(digest)
        if found is None:
            found = self.disk.get(digest, self.classifier.num_classes)
            if found is not None:
                self.memory[digest] = found
        return found

    def add(self, digest: str, rgb: np.ndarray) -> None:
        if digest not in self.pending:
            self.pending[digest] = self.classifier.preprocess(rgb)

    def flush(self) -> None:
        if not self.pending:
            return
        digests = list(self.pending)
        scores = self.classifier.predict(np.stack([self.pending[d] for d in digests]))
        for digest, row in zip(digests, scores, strict=True):
            row = np.asarray(row, np.float32)
            self.memory[digest] = row
            self.disk.put(digest, row)
        self.classified += len(digests)
        self.pending.clear()


def _utility_pass(
    evaluator: Any,
    points: Sequence[Point],
    sweepers: dict[str, SweepDetector],
    method_objects: dict[str, Any],
    batch: int,
    progress: bool,
    resamples: int,
    seed: int,
) -> tuple[dict[Point, UtilityFigures], int]:
    """One pass over the utility set, every point at once; images are classified only when touched."""
    from faceveil.eval.utility import _decode, _rgb8

    original = evaluator.original_scores()
    rows = evaluator.rows
    n, k = len(rows), min(5, evaluator.classifier.num_classes)
    truth = np.array([r.class_index for r in rows])
    top1_o, top5_o = _top(original, truth, k)
    det_keys = sorted({(p.detector, p.threshold) for p in points}, key=lambda x: (x[0], x[1] or -1.0))
    digests: dict[Point, dict[int, str]] = {p: {} for p in points}
    faces: dict[Point, np.ndarray] = {p: np.zeros(n, np.int64) for p in points}
    scores = _PixelScores(evaluator)
    from faceveil.methods.regions import region_for

    for i, row in enumerate(_bar(rows, "utility", progress)):
        picture = _decode(row.path, row, evaluator.labels)
        rgb = picture.rgb8()
        key = image_key(rgb)
        height, width = rgb.shape[:2]
        faces_at = {dk: sweepers[dk[0]].detect(rgb, dk[1], key) for dk in det_keys}
        made: dict[tuple[Any, ...], str] = {}
        for p in points:
            found = faces_at[(p.detector, p.threshold)]
            faces[p][i] = len(found)
            if not found:
                continue
            akey = (tuple(f.bbox for f in found), p.method, p.shape, p.margin)
            digest = made.get(akey)
            if digest is None:
                pixels = picture.pixels.copy()
                regions = [region_for(f, p.shape, p.margin, width, height) for f in found]  # type: ignore[arg-type]
                method_objects[p.method].apply(pixels, regions)
                anon = _rgb8(pixels)
                digest = made[akey] = hashlib.sha256(np.ascontiguousarray(anon).data).hexdigest()
                if scores.get(digest) is None:
                    scores.add(digest, anon)
            digests[p][i] = digest
        if len(scores.pending) >= batch:
            scores.flush()
    scores.flush()
    out = {}
    names = [r.file for r in rows]
    from faceveil.eval.utility import accuracies, mcnemar

    for p in points:
        anon = original.copy()
        for i, digest in digests[p].items():
            found = scores.get(digest)
            assert found is not None
            anon[i] = found
        top1_a, top5_a = _top(anon, truth, k)
        test = mcnemar(top1_o, top1_a)
        out[p] = UtilityFigures(
            **accuracies((top1_o, top1_a), (top5_o, top5_a), resamples, seed),
            mcnemar_p=test.p_value,
            correct_to_wrong=test.correct_to_wrong,
            wrong_to_correct=test.wrong_to_correct,
            touched=len(digests[p]),
            faces=int(faces[p].sum()),
            flipped=[names[i] for i in np.nonzero(top1_o & ~top1_a)[0]],
            gained=[names[i] for i in np.nonzero(~top1_o & top1_a)[0]],
        )
    return out, scores.classified


def _top(scores: np.ndarray, truth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: true class first, and within the first ``k`` (as ``faceveil eval utility`` counts)."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return scores.argmax(1) == truth, (top == truth[:, None]).any(axis=1)


# --- the sweep --------------------------------------------------------------------------------------------


def run_tradeoff(
    detection_sets: Sequence[Path | str],
    images: Path | str | None,
    labels: Path | str | None,
    *,
    detectors: Sequence[str] = ("default",),
    thresholds: Sequence[float | None] = (None,),
    methods: Sequence[str] = ("blur",),
    shapes: Sequence[str] = ("ellipse",),
    margins: Sequence[float] = (0.35,),
    limit: int | None = None,
    difficulty: str = "hard",
    reid: bool = True,
    min_face: float = MIN_FACE,
    goals: Goals | None = None,
    model: Any = "mobilenet_v2",
    cache_dir: Path | str | None = "default",
    threads: int | None = None,
    batch_size: int = 32,
    resamples: int | None = None,
    seed: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TradeoffResult:
    """Measure every point of the grid on the detection sets and (if ``images``) the utility set."""
    import time

    from faceveil import detectors as registry
    from faceveil.anonymizer import SHAPES
    from faceveil.audit.reid import COSINE_THRESHOLD, MODEL_NAME
    from faceveil.eval.utility import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, default_cache_dir

    started = time.perf_counter()
    if not detection_sets and images is None:
        raise UsageError("give at least one --detection-set or a utility set (--images and --labels)")
    if (images is None) != (labels is None):
        raise UsageError("--images and --labels go together")
    for shape in shapes:
        if shape not in SHAPES:
            raise UsageError(f"unknown mask shape {shape!r}: choose ellipse or box")
    for margin in margins:
        if margin < 0:
            raise UsageError(f"margin must be 0 or more, got {margin}")
    if not (detectors and thresholds and methods and shapes and margins):
        raise UsageError("every list (detectors, thresholds, methods, shapes, margins) needs an entry")
    method_objects = {m: make_method(m) for m in methods}
    points = grid(detectors, thresholds, methods, shapes, margins)
    root = default_cache_dir() if cache_dir == "default" else cache_dir
    cache = DetectionCache(None if root is None else Path(root))
    floor = min([CACHE_SCORE, *(t for t in thresholds if t is not None)])
    sweepers = {d: SweepDetector(registry.create(d, threads=threads), cache, floor) for d in detectors}
    # Load the sets before any model runs: a bad folder fails at once.
    loaded = _load_sets(detection_sets, difficulty)
    evaluator = None
    if images is not None:
        from faceveil.eval.utility import UtilityEvaluator

        evaluator = UtilityEvaluator(
            images, labels, model, cache_dir=root, limit=limit, threads=threads, batch_size=batch_size
        )
    reid_tool = _Reid(threads, COSINE_THRESHOLD) if reid and loaded else None
    results = {p: PointResult(p) for p in points}
    primary: list[str] = []
    set_info: dict[str, dict[str, Any]] = {}
    for name, dataset, subsets in loaded:
        figures, reids = _detection_pass(
            name, dataset, points, sweepers, method_objects, reid_tool, min_face, progress
        )
        primary.extend(f"{name}/{s}" for s in subsets)
        set_info[name] = {
            "path": str(dataset.root),
            "format": dataset.format,
            "images": len(dataset.images),
            "faces": {s: dataset.faces_in(s) for s in dataset.sets},
            "primary": subsets,
        }
        for p in points:
            results[p].sets.update(figures[p])
            if reid_tool is not None:
                results[p].reid_by_set[name] = reids[p]
    if reid_tool is not None:
        for p in points:
            for r in results[p].reid_by_set.values():
                r.rank()
            results[p].reid = Reid.merged(results[p].reid_by_set.values(), reid_tool.threshold)
    utility_info = None
    if evaluator is not None:
        if progress and log:
            log("classifying the originals (cached after the first run)")
        utility, classified = _utility_pass(
            evaluator,
            points,
            sweepers,
            method_objects,
            batch_size,
            progress,
            BOOTSTRAP_RESAMPLES if resamples is None else resamples,
            BOOTSTRAP_SEED if seed is None else seed,
        )
        for p in points:
            results[p].utility = utility[p]
        utility_info = {
            "images_folder": str(evaluator.images),
            "labels": str(evaluator.labels),
            "images": len(evaluator.rows),
            "model": evaluator.classifier.name,
            "top1_originals": _num(next(iter(utility.values())).top1_originals) if utility else None,
            "classified_anonymized": classified,
            "bootstrap": {
                "resamples": BOOTSTRAP_RESAMPLES if resamples is None else resamples,
                "seed": BOOTSTRAP_SEED if seed is None else seed,
                "level": 0.95,
                "paired": True,
            },
        }
    result = TradeoffResult(
        points=list(results.values()),
        detection_sets=set_info,
        primary=primary,
        utility=utility_info,
        reid_settings=None
        if reid_tool is None
        else {
            "model": MODEL_NAME,
            "cosine": COSINE_THRESHOLD,
            "min_face": min_face,
            "figure": (goals or Goals()).reid_figure,
        },
        goals=goals or Goals(),
        cache={
            "folder": None if cache.folder is None else str(cache.folder),
            "detections_reused": cache.hits,
            "detections_run": cache.misses,
        },
    )
    mark_pareto(result)
    if not result.goals.empty():
        for p in result.points:
            p.meets = result.goals.check(p, primary)
    result.seconds = time.perf_counter() - started
    return result


def _bar(items: Sequence[Any], desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr, leave=False)


# --- outputs ----------------------------------------------------------------------------------------------

PLOT = "tradeoff.png"
REPORT = "report.md"
JSON_NAME = "tradeoff.json"


def _f3(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.1f} %"


def _pts(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.1f}"


def table_rows(result: TradeoffResult) -> tuple[list[str], list[list[str]]]:
    """The report's table: header and one row per point (the names the JSON uses)."""
    header = ["point", "detector", "threshold", "method", "shape", "margin"]
    for s in result.primary:
        header += [f"protected {s}", f"precision {s}"]
    if result.reid_settings is not None:
        header += ["reid_share", "reid_true_share"]
    if result.utility is not None:
        header += ["top1_drop (points, 95 % CI)", "touched_share"]
    header.append("pareto")
    if not result.goals.empty():
        header.append("meets goals")
    rows = []
    for i, r in enumerate(result.points, 1):
        p = r.point
        row = [str(i), p.detector, p.threshold_label, p.method, p.shape, f"{p.margin:g}"]
        for s in result.primary:
            f = r.sets.get(s)
            row += [_f3(f.protected if f else None), _f3(f.precision if f else None)]
        if result.reid_settings is not None:
            if r.reid is None or not r.reid.faces:
                row += ["-", "-"]
            else:
                row += [
                    f"{100 * r.reid.share:.1f} % of {r.reid.faces}",
                    f"{_pct(r.reid.true_share)} of {r.reid.true_faces}",
                ]
        if r.utility is not None:
            u = r.utility
            row += [
                f"{_pts(u.top1_drop)} ({_pts(u.top1_drop_ci[0])} to {_pts(u.top1_drop_ci[1])})",
                f"{100 * u.touched_share:.1f} %",
            ]
        elif result.utility is not None:
            row += ["-", "-"]
        row.append("yes" if r.pareto else "")
        if not result.goals.empty():
            row.append("yes" if r.meets else "")
        rows.append(row)
    return header, rows


def markdown(result: TradeoffResult, plot: str | None = PLOT) -> str:
    header, rows = table_rows(result)
    lines = ["# faceveil eval tradeoff", ""]
    for name, info in result.detection_sets.items():
        faces = ", ".join(f"{s} {n}" for s, n in info["faces"].items())
        lines.append(f"- detection set `{name}` ({info['format']}, {info['images']} images; faces: {faces})")
    if result.utility is not None:
        u = result.utility
        lines.append(
            f"- utility set `{u['images_folder']}` ({u['images']} images), {u['model']}, "
            f"top-1 on the originals {100 * (u['top1_originals'] or 0):.1f} %"
        )
    if result.reid_settings is not None:
        rs = result.reid_settings
        lines.append(
            f"- reid_share: hidden faces >= {rs['min_face']:g} px whose anonymized copy {rs['model']} still "
            f"matches to the original (cosine >= {rs['cosine']}), over all detection sets (the audit's "
            "figure; false detections count too); reid_true_share: the same among hidden faces that are "
            "real faces (IoU >= 0.5 with the ground truth)"
        )
    lines.append(
        "- protected: share of ground-truth faces >= 80 % covered; precision: share of hidden regions "
        "matching a face (IoU >= 0.5)"
    )
    if not result.goals.empty():
        lines.append(f"- goals: {_goals_text(result.goals)}")
    lines += ["", f"{len(result.points)} points in {result.seconds:.0f} s.", ""]
    if plot:
        lines += [f"![privacy against utility]({plot})", ""]
    lines += ["## All points", "", _md_table(header, rows), ""]
    front = [(i, r) for i, r in enumerate(result.points, 1) if r.pareto]
    lines += [
        f"## Pareto front ({len(front)} of {len(result.points)})",
        "",
        "No other point is at least as good on every objective ("
        + ", ".join(objective_names(result))
        + ") and better on one. By top-1 drop:",
        "",
    ]
    front.sort(key=lambda ir: ir[1].utility.top1_drop if ir[1].utility else 0.0)
    lines += [_md_table(header, [rows[i - 1] for i, _ in front]), ""]
    if not result.goals.empty():
        meeting = [r.point.name for r in result.points if r.meets]
        lines += ["## Meeting every goal", ""]
        lines += [f"- {m}" for m in meeting] or ["none of the points"]
        lines.append("")
    return "\n".join(lines)


def _goals_text(goals: Goals) -> str:
    parts = []
    if goals.max_top1_drop is not None:
        parts.append(f"top1_drop <= {100 * goals.max_top1_drop:g} points")
    parts += [f"protected {k} >= {v:g}" for k, v in goals.min_protected.items()]
    if goals.max_reid_share is not None:
        parts.append(f"reid {goals.reid_figure} <= {100 * goals.max_reid_share:g} %")
    return "; ".join(parts)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def text_table(result: TradeoffResult) -> str:
    """The table for the terminal (fixed-width columns)."""
    header, rows = table_rows(result)
    header = [h.replace(" (points, 95 % CI)", "") for h in header]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def plot(result: TradeoffResult, path: Path) -> None:
    """One panel per primary detection set (x top-1 drop in points, y protected) and one for re-id.

    A line joins the thresholds of one series (detector, method, shape, margin); points are labelled by
    threshold, ringed when on the Pareto front; the thin bars are the drop's 95 % interval. Goals, when
    given, are dashed lines.
    """
    from faceveil.eval.report import _pyplot
    from faceveil.io.atomic import atomic_path

    plt = _pyplot()
    panels = result.primary or []
    reid_panel = result.reid_settings is not None
    count = max(1, len(panels) + (1 if reid_panel else 0))
    cols = 2 if count in (2, 4) else min(count, 3)
    nrows = -(-count // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.6 * cols, 4.4 * nrows), squeeze=False, dpi=110)
    series: dict[str, list[PointResult]] = {}
    for r in result.points:
        series.setdefault(r.point.series, []).append(r)
    cmap = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    markers = "osD^v<>phX*P"
    styles = {
        s: (cmap(i % cmap.N), markers[(i // cmap.N) % len(markers)]) for i, s in enumerate(sorted(series))
    }

    def x_of(r: PointResult) -> float:
        return 100 * r.utility.top1_drop if r.utility else math.nan

    def draw(ax: Any, y_of: Callable[[PointResult], float], ring: bool) -> None:
        for s, members in sorted(series.items()):
            members = sorted(members, key=lambda r: -1.0 if r.point.threshold is None else r.point.threshold)
            colour, marker = styles[s]
            xs, ys = [x_of(r) for r in members], [y_of(r) for r in members]
            ax.plot(xs, ys, "-", color=colour, marker=marker, label=s, lw=1.2, ms=5, alpha=0.9)
            labelled = len(members) > 1
            for r, x, y in zip(members, xs, ys, strict=True):
                if r.utility is not None:
                    lo, hi = (100 * v for v in r.utility.top1_drop_ci)
                    ax.plot([lo, hi], [y, y], "-", color=colour, lw=0.6, alpha=0.35)
                if labelled:
                    ax.annotate(
                        r.point.threshold_label, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7
                    )
                if ring and r.pareto:
                    ax.plot([x], [y], "o", ms=10, mfc="none", mec="black", mew=0.7)
        ax.set_xlabel("top-1 drop on the utility set (points; bar: 95 % CI)", fontsize=8)
        ax.grid(alpha=0.3)

    axes_list = [ax for row in axes for ax in row]
    for ax, name in zip(axes_list, panels, strict=False):
        draw(ax, lambda r, name=name: r.protected(name), ring=True)
        _goal_shading(ax, result.goals, name, is_reid=False)
        ax.set_title(f"protected on {name}", fontsize=10)
        ax.set_ylabel("protected (share of faces >= 80 % covered)", fontsize=8)
    if reid_panel:
        figure = result.goals.reid_figure
        ax = axes_list[len(panels)]
        draw(ax, lambda r: 100 * r.reid.figure(figure) if r.reid and r.reid.faces else math.nan, ring=True)
        _goal_shading(ax, result.goals, "", is_reid=True)
        tall = (result.reid_settings or {}).get("min_face", MIN_FACE)
        ax.set_title(f"re-identifiable hidden faces >= {tall:g} px (SFace, {figure})", fontsize=10)
        ax.set_ylabel(f"reid {figure} (%)", fontsize=8)
    for ax in axes_list[count:]:
        ax.axis("off")
    handles, labels = axes_list[0].get_legend_handles_labels()
    columns = max(1, -(-len(labels) // 24))
    fig.suptitle("privacy against utility (labels: threshold; ringed: Pareto front)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.legend(
        handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=columns, fontsize=8, frameon=False
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _goal_shading(ax: Any, goals: Goals, name: str, is_reid: bool) -> None:
    if goals.max_top1_drop is not None:
        ax.axvline(100 * goals.max_top1_drop, color="#2a9d8f", ls="--", lw=1)
    if is_reid:
        if goals.max_reid_share is not None:
            ax.axhline(100 * goals.max_reid_share, color="#2a9d8f", ls="--", lw=1)
        return
    for key, low in goals.min_protected.items():
        if key == name or name.split("/")[0] == key:
            ax.axhline(low, color="#2a9d8f", ls="--", lw=1)


def write_outputs(result: TradeoffResult, out: Path, json_path: Path | None = None) -> dict[str, Path]:
    """Write the plot, report.md and tradeoff.json into ``out`` (and the JSON to ``json_path``)."""
    from faceveil.eval.report import _write_text, write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"plot": out / PLOT, "markdown": out / REPORT, "json": out / JSON_NAME}
    plot(result, written["plot"])
    _write_text(written["markdown"], markdown(result, PLOT))
    data = result.to_json()
    data["report"] = {k: str(v) for k, v in written.items()}
    write_json(data, written["json"])
    if json_path is not None:
        write_json(data, Path(json_path))
        written["json_copy"] = Path(json_path)
    return written
