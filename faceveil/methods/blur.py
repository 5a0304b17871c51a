"""Gaussian blur whose strength grows with the face, so no face size stays recognisable."""

from __future__ import annotations

import cv2
import numpy as np

from faceveil.methods.base import RegionMethod, register


class Blur(RegionMethod):
    """Gaussian blur with sigma = ``strength`` x region size and a feathered edge.

    Large sigmas are computed on a downscaled copy (blur commutes with scale), which keeps a
    full-frame face as cheap as a small one.
    """

    name = "blur"

    def __init__(self, strength: float = 0.2, feather: float = 0.1) -> None:
        self.strength = strength
        self.feather = feather

    def transform(self, roi: np.ndarray, size: float) -> np.ndarray:
        sigma = max(1.5, self.strength * size)
        h, w = roi.shape[:2]
        factor = max(1.0, sigma / 3.0)
        sw, sh = max(1, round(w / factor)), max(1, round(h / factor))
        small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA) if factor > 1 else roi
        small_sigma = sigma / (w / sw if factor > 1 else 1.0)
        blurred = cv2.GaussianBlur(small, (0, 0), small_sigma, borderType=cv2.BORDER_REPLICATE)
        if factor > 1:
            blurred = cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)
        return blurred


register("blur", Blur)
