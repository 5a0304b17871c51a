"""OpenCV's Viola-Jones Haar cascades: frontal faces, plus profiles facing either way."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from faceveil.detectors._common import check_image, fit, nms, package_dir, set_cv_threads, to_faces
from faceveil.detectors.base import DetectorInfo, register
from faceveil.errors import InputError, MissingExtraError
from faceveil.types import Face

PIP = "opencv-python-headless==4.14.0.94"
FRONTAL = "data/haarcascade_frontalface_default.xml"
PROFILE = "data/haarcascade_profileface.xml"
NEIGHBOURS_AT_HALF = 5.0
"""A face confirmed by this many neighbouring windows scores 0.5 (see ``Haar``)."""


def neighbours_score(neighbours: np.ndarray | float) -> np.ndarray | float:
    """Score in [0, 1) of a face that ``neighbours`` overlapping raw windows voted for: n / (n + 5)."""
    return neighbours / (neighbours + NEIGHBOURS_AT_HALF)


def min_neighbours(threshold: float) -> int:
    """The fewest neighbouring windows whose score reaches ``threshold`` (at least 2, see ``Haar``)."""
    if threshold >= 1.0:
        return 10**6
    return max(2, math.ceil(NEIGHBOURS_AT_HALF * threshold / (1.0 - threshold) - 1e-9))


def _cascade_path(override: str | Path | None, relative: str) -> Path:
    """``override``, or the cascade shipped in the OpenCV wheel (absent from opencv-python-headless 5.x)."""
    if override is not None:
        return Path(override)
    path = package_dir("cv2", "haar", PIP) / relative
    if not path.is_file():
        raise MissingExtraError(
            f"the 'haar' detector (cv2/{relative}, absent from OpenCV {cv2.__version__})", "cv2", PIP
        )
    return path


class Haar:
    """Haar cascades from the OpenCV wheel (``cv2/data``): the frontal cascade, and the profile cascade
    run on the image and on its mirror image (it only knows faces turned one way).

    Scores: a cascade gives no probability, only how many overlapping raw windows voted for each face
    (OpenCV's neighbours). The score is n / (n + 5): 3 windows score 0.375, 5 score 0.5, 20 score 0.8.
    A threshold therefore sets OpenCV's ``minNeighbors`` (which keeps groups of more than that many
    windows, so ``minNeighbors`` = n - 1); a lone window (n = 1) is never reported, so thresholds under
    2 / 7 = 0.29 all act like 0.29.
    ``max_side`` shrinks large images first (faster; faces under 20 px of the shrunk image are lost).
    """

    def __init__(
        self,
        threshold: float = 0.5,
        nms: float = 0.3,
        max_side: int | None = None,
        scale_factor: float = 1.1,
        profile: bool = True,
        frontal_path: str | Path | None = None,
        profile_path: str | Path | None = None,
        threads: int | None = None,
        name: str = "haar",
    ) -> None:
        set_cv_threads(threads)
        if not hasattr(cv2, "CascadeClassifier"):
            raise MissingExtraError(
                f"the 'haar' detector (cv2.CascadeClassifier, not in OpenCV {cv2.__version__})", "cv2", PIP
            )
        self._cascades = [(self._load(_cascade_path(frontal_path, FRONTAL)), False)]
        if profile:
            side = self._load(_cascade_path(profile_path, PROFILE))
            self._cascades += [(side, False), (side, True)]
        self.name = name
        self.threshold = threshold
        self.nms = nms
        self.max_side = max_side
        self.scale_factor = scale_factor

    @staticmethod
    def _load(path: str | Path) -> cv2.CascadeClassifier:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"Haar cascade file {path} does not exist")
        try:
            cascade = cv2.CascadeClassifier(str(path))
        except Exception as exc:  # cv2.error, or SystemError from the bindings
            raise InputError(f"cannot load Haar cascade {path}: {exc}") from exc
        if cascade.empty():
            raise InputError(f"cannot load Haar cascade {path}: not a valid OpenCV cascade file")
        return cascade

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels."""
        thr = self.threshold if threshold is None else threshold
        small, scale = fit(check_image(rgb), self.max_side)
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        width = grey.shape[1]
        boxes, votes = [], []
        for cascade, mirrored in self._cascades:
            found, neighbours = cascade.detectMultiScale2(
                grey[:, ::-1].copy() if mirrored else grey,
                scaleFactor=self.scale_factor,
                minNeighbors=min_neighbours(thr) - 1,
                minSize=(20, 20),
            )
            if len(found) == 0:
                continue
            found = np.asarray(found, np.float64).reshape(-1, 4)
            if mirrored:
                found[:, 0] = width - found[:, 0] - found[:, 2]
            boxes.append(found)
            votes.append(np.asarray(neighbours, np.float64).reshape(-1))
        if not boxes:
            return []
        all_boxes = np.concatenate(boxes)
        scores = neighbours_score(np.concatenate(votes))
        keep = [i for i in nms(all_boxes, scores, self.nms) if scores[i] >= thr]
        return to_faces(all_boxes[keep], scores[keep], self.name, scale)


register(
    DetectorInfo(
        name="haar",
        factory=lambda threads=None, **options: Haar(threads=threads, **options),
        summary="OpenCV Haar cascades (Viola-Jones), frontal + both profiles; classic baseline, no DNN",
        weights=f"{PIP}: cv2/{FRONTAL}, cv2/{PROFILE}",
        licence="Intel License Agreement (BSD-style, in the XML header); wheel Apache-2.0",
        extra=PIP,
        requires=(f"cv2:{FRONTAL}", f"cv2:{PROFILE}"),
    )
)
