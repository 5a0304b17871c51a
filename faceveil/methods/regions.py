"""Face box → obfuscated region, and regions → pixel masks (shared by methods and evaluation)."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from faceveil.types import BBox, Face, Region, Shape


def region_for(face: Face, shape: Shape, margin: float, width: int, height: int) -> Region:
    """The region hiding ``face``: its box grown by ``margin`` x size on every side, clipped to the image.

    An ellipse is inscribed in the grown box (before clipping, so it keeps its proportions).
    """
    x, y, w, h = face.bbox
    grown = (x - margin * w, y - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin))
    if shape == "ellipse":
        return Region("ellipse", grown)
    return Region("box", clip_bbox(grown, width, height))


def clip_bbox(bbox: BBox, width: int, height: int) -> BBox:
    """``bbox`` limited to the image."""
    x, y, w, h = bbox
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    return (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))


def paint_region(mask: np.ndarray, region: Region, value: int = 255) -> None:
    """Fill ``region`` into a uint8 mask at pixel resolution (a pixel belongs if its centre is inside)."""
    x, y, w, h = region.bbox
    if w <= 0 or h <= 0:
        return
    if region.shape == "box":
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = round(x + w), round(y + h)
        mask[y0:y1, x0:x1] = value
    elif region.shape == "ellipse":
        _paint_ellipse(mask, (x + w / 2, y + h / 2), (w / 2, h / 2), value)
    else:
        shift = 4
        pts = np.round(np.asarray(region.points, np.float64) * (1 << shift) - (1 << (shift - 1))).astype(
            np.int32
        )
        cv2.fillPoly(mask, [pts], value, lineType=cv2.LINE_8, shift=shift)


def _paint_ellipse(
    mask: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], value: int
) -> None:
    """Exact pixel-centre ellipse test over the ellipse's bounding rows and columns."""
    height, width = mask.shape[:2]
    cx, cy = centre
    ax, ay = axes
    x0, x1 = max(0, int(np.floor(cx - ax))), min(width, int(np.ceil(cx + ax)) + 1)
    y0, y1 = max(0, int(np.floor(cy - ay))), min(height, int(np.ceil(cy + ay)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    xs = ((np.arange(x0, x1) + 0.5 - cx) / ax) ** 2
    ys = ((np.arange(y0, y1) + 0.5 - cy) / ay) ** 2
    inside = ys[:, None] + xs[None, :] <= 1.0
    mask[y0:y1, x0:x1][inside] = value


def union_mask(regions: Iterable[Region], width: int, height: int) -> np.ndarray:
    """A uint8 mask (255 inside) of everything the regions cover."""
    mask = np.zeros((height, width), np.uint8)
    for region in regions:
        paint_region(mask, region)
    return mask
