"""Test-time augmentation: run a detector on upscaled tiles or a mirrored copy, boxes mapped back."""

from __future__ import annotations

import cv2
import numpy as np

from faceveil.detectors.base import Detector, upscale_factor
from faceveil.types import Face

MIRRORED_LANDMARKS = (1, 0, 2, 4, 3)
"""Index of each landmark's partner after a horizontal flip (eyes and mouth corners swap)."""


def augmented(detector: Detector, augment: tuple[str, ...]) -> Detector:
    """``detector`` fused with its augmented runs: ``flip`` (mirrored) and ``<f>x`` (upscaled tiles)."""
    from faceveil.detectors.fusion import FusedDetector

    runs: list[Detector] = [detector]
    for token in augment:
        factor = upscale_factor(token)
        runs.append(Mirrored(detector) if factor is None else Upscaled(detector, factor=factor))
    return FusedDetector(runs, name=f"{detector.name}@{','.join(augment)}")


class _Wrapped:
    """A run of another detector on a changed image: named after it, at its own threshold."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.name = detector.name

    @property
    def threshold(self) -> float | None:
        """The wrapped detector's own threshold."""
        return getattr(self.detector, "threshold", None)


class Upscaled(_Wrapped):
    """Runs ``detector`` on the image enlarged by ``factor``, in overlapping tiles to bound memory.

    Crowds' 6-10 px faces are below most detectors' smallest anchor; at 2x they are found.
    """

    def __init__(self, detector: Detector, factor: float = 2.0, tile: int = 1024, overlap: int = 96) -> None:
        super().__init__(detector)
        self.factor = factor
        self.tile = tile
        self.overlap = overlap

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in original pixels; a face comes from the one tile whose core holds its centre."""
        big = cv2.resize(rgb, None, fx=self.factor, fy=self.factor, interpolation=cv2.INTER_LINEAR)
        height, width = big.shape[:2]
        faces: list[Face] = []
        for y0, y1, ys in _spans(height, self.tile, self.overlap):
            for x0, x1, xs in _spans(width, self.tile, self.overlap):
                tile = np.ascontiguousarray(big[y0:y1, x0:x1])
                for face in self.detector.detect(tile, threshold):
                    cx = x0 + face.bbox[0] + face.bbox[2] / 2
                    cy = y0 + face.bbox[1] + face.bbox[3] / 2
                    if xs[0] <= cx < xs[1] and ys[0] <= cy < ys[1]:
                        faces.append(_moved(face, x0, y0, 1.0 / self.factor))
        return faces


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, tuple[float, float]]]:
    """Tile ranges along one axis, each with the core range (split mid-overlap) that owns a centre.

    The fewest tiles of at most ``tile`` pixels overlapping by about ``overlap`` (to a pixel), all the same
    size and evenly spaced, so no pixel is seen more often than the overlap needs.
    """
    if length <= tile:
        return [(0, length, (float("-inf"), float("inf")))]
    count = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (count - 1) * overlap) // count)
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    spans = []
    for i, start in enumerate(starts):
        lo = float("-inf") if i == 0 else (start + starts[i - 1] + size) / 2
        hi = float("inf") if i == len(starts) - 1 else (starts[i + 1] + start + size) / 2
        spans.append((start, start + size, (lo, hi)))
    return spans


class Mirrored(_Wrapped):
    """Runs ``detector`` on the horizontally flipped image (catches profile faces facing the other way)."""

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in the original image's pixels."""
        width = rgb.shape[1]
        found = self.detector.detect(np.ascontiguousarray(rgb[:, ::-1]), threshold)
        out = []
        for face in found:
            x, y, w, h = face.bbox
            marks = None
            if face.landmarks is not None and len(face.landmarks) == 5:
                flipped = [(width - px, py) for px, py in face.landmarks]
                marks = tuple(flipped[i] for i in MIRRORED_LANDMARKS)
            out.append(Face((width - x - w, y, w, h), face.score, face.detector, marks))
        return out


def _moved(face: Face, dx: float, dy: float, scale: float) -> Face:
    """``face`` shifted by (dx, dy) and then scaled."""
    x, y, w, h = face.bbox
    marks = None
    if face.landmarks is not None:
        marks = tuple(((px + dx) * scale, (py + dy) * scale) for px, py in face.landmarks)
    return Face(((x + dx) * scale, (y + dy) * scale, w * scale, h * scale), face.score, face.detector, marks)
