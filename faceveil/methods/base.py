"""The obfuscation-method interface, its registry, and the masking every method shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import cv2
import numpy as np

from faceveil.errors import UsageError
from faceveil.methods.regions import paint_region
from faceveil.types import Region


class Method(Protocol):
    """Hides each region of an image in place; pixels outside regions (and their feather) stay untouched."""

    name: str

    def apply(self, pixels: np.ndarray, regions: Sequence[Region]) -> None:
        """Obfuscate ``regions`` of ``pixels`` (HxW, HxWx3 or HxWx4, uint8 or uint16; alpha is left alone)."""
        ...


_REGISTRY: dict[str, Callable[[], Method]] = {}


def register(name: str, factory: Callable[[], Method]) -> None:
    """Make a method available by name."""
    _REGISTRY[name] = factory


def registered() -> list[str]:
    """Names of all methods."""
    _load_builtins()
    return sorted(_REGISTRY)


def create(name: str) -> Method:
    """Build the method called ``name``."""
    _load_builtins()
    if name not in _REGISTRY:
        raise UsageError(f"unknown method {name!r}: choose from {', '.join(registered())}")
    return _REGISTRY[name]()


def _load_builtins() -> None:
    from faceveil.methods import blur, box, pixelate  # noqa: F401


class RegionMethod:
    """Base for methods that replace each region by a transformed copy of its neighbourhood.

    Subclasses implement ``transform(roi, region_size)``; this class crops, masks, feathers and blends,
    so every pixel inside a region is fully replaced and the feather only spreads outward.
    """

    name = "region"
    feather = 0.0

    def apply(self, pixels: np.ndarray, regions: Sequence[Region]) -> None:
        height, width = pixels.shape[:2]
        color = pixels if pixels.ndim == 2 or pixels.shape[2] <= 3 else pixels[..., :3]
        for region in regions:
            x, y, w, h = region.bbox
            if w <= 0 or h <= 0:
                continue
            size = max(w, h)
            pad = int(np.ceil(self.feather * size)) + 1
            x0, y0 = max(0, int(np.floor(x)) - pad), max(0, int(np.floor(y)) - pad)
            x1, y1 = min(width, int(np.ceil(x + w)) + pad), min(height, int(np.ceil(y + h)) + pad)
            if x1 <= x0 or y1 <= y0:
                continue
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            shifted = Region(
                region.shape,
                (x - x0, y - y0, w, h),
                None if region.points is None else tuple((px - x0, py - y0) for px, py in region.points),
            )
            paint_region(mask, shifted)
            if not mask.any():
                continue
            roi = color[y0:y1, x0:x1]
            hidden = self.transform(roi, size)
            feather = self.feather * size
            if feather < 2:
                inside = mask > 0
                roi[inside] = hidden[inside]
                continue
            alpha = _feathered(mask, feather)
            if color.ndim == 3:
                alpha = alpha[..., None]
            mixed = hidden.astype(np.float32) * alpha + roi.astype(np.float32) * (1.0 - alpha)
            info = np.iinfo(pixels.dtype)
            roi[...] = np.clip(np.rint(mixed), info.min, info.max).astype(pixels.dtype)

    def transform(self, roi: np.ndarray, size: float) -> np.ndarray:
        """The obfuscated version of ``roi`` for a region whose larger side is ``size`` pixels."""
        raise NotImplementedError


def _feathered(mask: np.ndarray, width: float) -> np.ndarray:
    """1 inside the mask, falling linearly to 0 over ``width`` pixels outside it."""
    inside = mask > 0
    dist = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(1.0 - dist / width, 0.0, 1.0).astype(np.float32)
