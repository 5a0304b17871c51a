"""Solid fill: the most conservative method, nothing of the face survives."""

from __future__ import annotations

import numpy as np

from faceveil.methods.base import RegionMethod, register


class Box(RegionMethod):
    """Fill the region with one colour (black by default)."""

    name = "box"

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def transform(self, roi: np.ndarray, size: float) -> np.ndarray:
        return np.full_like(roi, self.value)


register("box", Box)
