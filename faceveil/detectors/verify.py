"""Verified detection: a second, human-face-only check on the larger faces a detector finds.

Why: the ``default`` detector (YuNet + CenterFace, tuned for recall) also fires on animal faces,
masks, helmets and instruments. On the 1,000 ImageNet images of ``imagenet-sample`` it touches 44 % of
the images and costs MobileNetV2 10.9 points of top-1, mostly by blurring the faces of dogs, primates
and cats: the objects the classifier is asked about. Crowd faces are the opposite case: small, many,
and never an animal's in the face sets we measure on.

What: :class:`VerifiedDetector` keeps every face of its base detector shorter than ``min_height``
pixels as it is. A taller face is cropped (a square ``crop_scale`` times its longer side, centred on
it, resized to ``crop_side`` pixels, so the face is seen at the scale the checking networks like best)
and kept only when a checking detector, run on that crop, finds a face overlapping it (IoU >=
``iou``) with at least the check's threshold. Any one of a check's checkers is enough. Faces
whose box is implausible for a face (``max_aspect``: height over width, or its inverse, beyond it) are
dropped whatever their size.

The ``balanced`` preset registered here is ``default`` checked by YuNet on a 160 px crop (score
>= 0.6), the point ``faceveil eval tradeoff`` found best for utility among those that keep the core
protection targets (BENCHMARKS.md): a tight crop at the checker's favourite scale gives a human face
a high score and most animal faces a low one. It also drops some real faces seen in profile or
behind an instrument, which is why it is a preset and not the default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from faceveil.detectors.base import Detector, DetectorInfo, register, registered
from faceveil.types import Face

CHECK_FLOOR = 0.05
"""Checkers are asked for faces down to this score; their best overlapping score meets each threshold."""
Run = Callable[[Any, float | None], list[Face]]
"""``run(detector, threshold)``: that detector's faces in the image being checked."""


class VerifiedDetector:
    """``base``'s faces, with the taller ones kept only when checking detectors confirm them on a crop.

    ``checks`` is a list of (checkers, threshold): a face passes a check when any of its checkers finds
    a face on the crop overlapping it with at least that score, and is kept when it passes every check.
    """

    def __init__(
        self,
        base: Detector,
        checks: Sequence[tuple[Sequence[Detector], float]],
        *,
        min_height: float = 32.0,
        iou: float = 0.3,
        crop_scale: float = 2.0,
        crop_side: int = 160,
        max_aspect: float = 3.0,
        name: str = "verified",
    ) -> None:
        self.base = base
        self.checks = [(list(checkers), float(threshold)) for checkers, threshold in checks]
        self.min_height = min_height
        self.iou = iou
        self.crop_scale = crop_scale
        self.crop_side = crop_side
        self.max_aspect = max_aspect
        self.name = name
        self._memo: dict[tuple[Any, ...], float] = {}

    @property
    def threshold(self) -> float | None:
        """The base detector's own threshold (``None`` when it has no single one, e.g. a fused detector)."""
        value = getattr(self.base, "threshold", None)
        return value if isinstance(value, int | float) else None

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image: ``base``'s at ``threshold``, verified."""
        return self.detect_with(rgb, threshold, lambda detector, t: detector.detect(rgb, t))

    def detect_with(self, rgb: np.ndarray, threshold: float | None, run: Run) -> list[Face]:
        """As :meth:`detect`, with the base detector's faces from ``run`` (e.g. a cache)."""
        return [f for f in run(self.base, threshold) if self.keep(rgb, f)]

    def keep(self, rgb: np.ndarray, face: Face) -> bool:
        """Whether ``face`` stays: a plausible shape, and small or confirmed by every check."""
        _, _, w, h = face.bbox
        if w <= 0 or h <= 0 or max(h / w, w / h) > self.max_aspect:
            return False
        if h < self.min_height:
            return True
        crop: tuple[np.ndarray, np.ndarray, str] | None = None
        for checkers, threshold in self.checks:
            passed = False
            for checker in checkers:
                if crop is None:
                    image, box = square_crop(rgb, face.bbox, self.crop_scale, self.crop_side)
                    crop = (image, box, hashlib.blake2b(image.data, digest_size=16).hexdigest())
                if self.score(checker, *crop) >= threshold:
                    passed = True
                    break
            if not passed:
                return False
        return True

    def score(self, checker: Detector, crop: np.ndarray, box: np.ndarray, digest: str = "") -> float:
        """The best score ``checker`` gives a face overlapping ``box`` on ``crop`` (0 when none)."""
        key = (id(checker), digest or hashlib.blake2b(crop.data, digest_size=16).hexdigest(), *box.round(3))
        found_score = self._memo.get(key)
        if found_score is not None:
            return found_score
        best = 0.0
        found = checker.detect(crop, CHECK_FLOOR)
        if found:
            overlap = _iou(box, np.asarray([f.bbox for f in found], np.float64))
            scores = np.asarray([f.score for f in found])[overlap >= self.iou]
            if scores.size:
                best = float(scores.max())
        if len(self._memo) > 100_000:
            self._memo.clear()
        self._memo[key] = best
        return best


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x, y, w, h box with each row of ``boxes``."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def square_crop(
    rgb: np.ndarray, bbox: Sequence[float], scale: float, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """A ``side`` x ``side`` crop centred on ``bbox`` covering ``scale`` times its longer side (black beyond
    the image), and ``bbox`` in the crop's pixels."""
    x, y, w, h = (float(v) for v in bbox)
    extent = max(1.0, scale * max(w, h))
    x0, y0 = x + w / 2 - extent / 2, y + h / 2 - extent / 2
    factor = side / extent
    # One affine warp does crop, pad and resize; INTER_AREA is not available to warpAffine, so shrink
    # large faces with a pre-resize first.
    source, pre = rgb, 1.0
    if factor < 0.5:
        pre = min(1.0, 2 * factor)
        source = cv2.resize(
            rgb,
            (max(1, round(rgb.shape[1] * pre)), max(1, round(rgb.shape[0] * pre))),
            interpolation=cv2.INTER_AREA,
        )
    f = factor / pre
    matrix = np.array([[f, 0.0, -x0 * pre * f], [0.0, f, -y0 * pre * f]], np.float64)
    crop = cv2.warpAffine(
        source, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    box = np.array([(x - x0) * factor, (y - y0) * factor, w * factor, h * factor], np.float64)
    return np.ascontiguousarray(crop), box


# --- the registered preset ------------------------------------------------------------------------------


def balanced(threads: int | None = None) -> VerifiedDetector:
    """``default`` with faces 32 px and taller re-checked by YuNet on a 160 px crop (score >= 0.6)."""
    from faceveil.detectors.base import create
    from faceveil.detectors.yunet import YuNet

    return VerifiedDetector(
        create("default", threads=threads),
        [([YuNet(threshold=CHECK_FLOOR, threads=threads, name="yunet-check")], 0.6)],
        min_height=32.0,
        name="balanced",
    )


_DEFAULT = registered()["default"]  # this module is imported after ``default`` is registered
register(
    DetectorInfo(
        name="balanced",
        factory=balanced,
        summary="default, with faces >= 32 px kept only when YuNet confirms them on a crop "
        "(fewer animal faces hidden; for training data)",
        weights="as default (YuNet also as the checker)",
        licence=_DEFAULT.licence,
        extra=_DEFAULT.extra,
        requires=_DEFAULT.requires,
        preset=True,
    )
)
