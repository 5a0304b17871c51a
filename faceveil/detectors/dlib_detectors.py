"""dlib's two face detectors: HOG + linear SVM (``dlib-hog``) and the MMOD CNN (``dlib-cnn``).

Scores: both detectors output an SVM-style margin m, not a probability; dlib's own operating point is
m = 0. faceveil reports ``sigmoid(2 m)`` = 1 / (1 + exp(-2 m)), so m = 0 scores 0.5, m = 1 scores 0.88,
m = -0.5 scores 0.27 and every score lies in (0, 1). For HOG a threshold t asks dlib for every window
with m >= logit(t) / 2, so thresholds under 0.5 trade precision for recall. The CNN's Python binding has
no threshold adjustment: it never reports m < 0, so its scores are always >= 0.5 and lower thresholds
change nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from faceveil.detectors._common import check_image, fit, import_module, nms, to_faces, weights_path
from faceveil.detectors.base import DetectorInfo, register
from faceveil.errors import InputError
from faceveil.types import Face

DLIB_PIP = "dlib-bin==20.0.1.post1"
CNN_PIP = "dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
MMOD = "models/mmod_human_face_detector.dat"
MARGIN_GAIN = 2.0
MMOD_MIN_SIDE = 40
"""Images (after upsampling) narrower than this hold no face MMOD can find (its window is ~40-80 px)."""


def margin_score(margin: np.ndarray | float) -> np.ndarray | float:
    """dlib's detection margin mapped into (0, 1): sigmoid(2 m), so dlib's own cut (m = 0) is 0.5."""
    return 1.0 / (1.0 + np.exp(-MARGIN_GAIN * np.asarray(margin, np.float64)))


def score_margin(score: float) -> float:
    """The margin whose score is ``score`` (the inverse of ``margin_score``)."""
    score = min(max(score, 1e-6), 1 - 1e-6)
    return math.log(score / (1.0 - score)) / MARGIN_GAIN


def _xywh(rects) -> np.ndarray:  # type: ignore[no-untyped-def]
    """dlib rectangles (inclusive corners) as x, y, w, h rows."""
    return np.asarray(
        [(r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1) for r in rects], np.float64
    ).reshape(-1, 4)


class _DlibDetector:
    """What both dlib detectors share: settings, shrinking, and margins turned into scored faces."""

    def __init__(self, name: str, threshold: float, nms: float, upsample: int, max_side: int | None) -> None:
        self.name = name
        self.threshold = threshold
        self.nms = nms
        self.upsample = upsample
        self.max_side = max_side

    def _prepare(self, rgb: np.ndarray, threshold: float | None) -> tuple[float, np.ndarray, float]:
        """(threshold to apply, the image shrunk to ``max_side`` and contiguous, its scale)."""
        small, scale = fit(check_image(rgb), self.max_side)
        return self.threshold if threshold is None else threshold, np.ascontiguousarray(small), scale

    def _faces(self, rects: list, margins: list[float], threshold: float, scale: float) -> list[Face]:
        """dlib rectangles and their margins as faces: scored, non-maximum suppressed, thresholded."""
        if len(rects) == 0:
            return []
        boxes = _xywh(rects)
        scores = margin_score(np.asarray(margins, np.float64))
        keep = [i for i in nms(boxes, scores, self.nms) if scores[i] >= threshold]
        return to_faces(boxes[keep], scores[keep], self.name, scale)


class DlibHOG(_DlibDetector):
    """dlib's HOG + linear SVM frontal face detector (5 sub-detectors: front, turned left/right, tilted).

    It looks for faces of about 80 px and larger; each ``upsample`` doubles the image first, which finds
    faces down to about 40 px (1) or 20 px (2) at 4x/16x the cost. ``max_side`` shrinks large images
    before upsampling. Scores: see the module docstring (sigmoid of the SVM margin, 0.5 = dlib's cut).
    """

    def __init__(
        self,
        threshold: float = 0.3,
        nms: float = 0.3,
        upsample: int = 1,
        max_side: int | None = 1024,
        threads: int | None = None,
        name: str = "dlib-hog",
    ) -> None:
        dlib = import_module("dlib", "dlib-hog", DLIB_PIP)
        self._detector = dlib.get_frontal_face_detector()
        super().__init__(name, threshold, nms, upsample, max_side)

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels."""
        thr, small, scale = self._prepare(rgb, threshold)
        rects, margins, _ = self._detector.run(small, self.upsample, score_margin(thr))
        return self._faces(rects, margins, thr, scale)


class DlibCNN(_DlibDetector):
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat`` from face-recognition-models).

    More robust to pose than HOG but slow on a CPU (several seconds per megapixel). The network finds
    faces of about 80 px and larger in the image it runs on, so images are first shrunk to ``max_side``
    (default 512, None: never) and then doubled ``upsample`` times (default 1): the network sees at
    most 1024 px and finds faces down to about 40 px of the shrunk image (about 8 % of its longer
    side). ``upsample=0`` is 4x faster but only finds faces >= 80 px of the shrunk image.
    Scores: sigmoid of the MMOD margin (module docstring); never below 0.5.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        nms: float = 0.3,
        upsample: int = 1,
        max_side: int | None = 512,
        weights: str | Path | None = None,
        threads: int | None = None,
        name: str = "dlib-cnn",
    ) -> None:
        dlib = import_module("dlib", "dlib-cnn", CNN_PIP)
        path = weights_path("face_recognition_models", MMOD, "dlib-cnn", CNN_PIP, weights)
        try:
            self._detector = dlib.cnn_face_detection_model_v1(str(path))
        except Exception as exc:
            raise InputError(f"cannot load dlib MMOD weights {path}: {exc}") from exc
        super().__init__(name, threshold, nms, upsample, max_side)

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels."""
        thr, small, scale = self._prepare(rgb, threshold)
        if min(small.shape[:2]) * 2**self.upsample < MMOD_MIN_SIDE:
            return []  # no face fits, and dlib's network fails on images smaller than its filters
        found = self._detector(small, self.upsample)
        return self._faces([d.rect for d in found], [d.confidence for d in found], thr, scale)


register(
    DetectorInfo(
        name="dlib-hog",
        factory=lambda threads=None, **options: DlibHOG(threads=threads, **options),
        summary="dlib HOG + linear SVM (frontal and turned faces >= ~40 px); score = sigmoid(2 x SVM margin)",
        weights=f"{DLIB_PIP}: built into the dlib library",
        licence="Boost Software License 1.0",
        extra=DLIB_PIP,
        requires=("dlib",),
    )
)

register(
    DetectorInfo(
        name="dlib-cnn",
        factory=lambda threads=None, **options: DlibCNN(threads=threads, **options),
        summary="dlib MMOD CNN (<=512 px, upsampled once); pose-robust, slow on CPU; score = sigmoid(2 m)",
        weights=f"face-recognition-models==0.3.0 (sdist): face_recognition_models/{MMOD}",
        licence="CC0 1.0 (model); dlib Boost Software License 1.0",
        extra=CNN_PIP,
        requires=("dlib", f"face_recognition_models:{MMOD}"),
    )
)
