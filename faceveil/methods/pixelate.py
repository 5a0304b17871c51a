"""Pixelation: cell averages, with cells scaled to the face so every face gets the same few cells."""

from __future__ import annotations

import cv2
import numpy as np

from faceveil.methods.base import RegionMethod, register


class Pixelate(RegionMethod):
    """Replace the region by ``cells`` x ``cells`` averages across the region's larger side."""

    name = "pixelate"

    def __init__(self, cells: int = 8) -> None:
        self.cells = cells

    def transform(self, roi: np.ndarray, size: float) -> np.ndarray:
        cell = max(2.0, size / self.cells)
        h, w = roi.shape[:2]
        small = cv2.resize(
            roi, (max(1, round(w / cell)), max(1, round(h / cell))), interpolation=cv2.INTER_AREA
        )
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


register("pixelate", Pixelate)
