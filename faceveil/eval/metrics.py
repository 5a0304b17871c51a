"""The contract's ``protected`` figure, coverage per face, and precision at the operating point."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from faceveil.methods.regions import union_mask
from faceveil.types import HiddenFace

SIZE_BINS = (("<16", 0, 16), ("16-32", 16, 32), ("32-64", 32, 64), (">64", 64, float("inf")))


def coverage(gt_boxes: np.ndarray, hidden: Sequence[HiddenFace], width: int, height: int) -> np.ndarray:
    """Share of each ground-truth box's pixels inside the union of the obfuscated regions."""
    out = np.zeros(len(gt_boxes))
    if not len(gt_boxes) or not hidden:
        return out
    mask = union_mask((h.region for h in hidden), width, height)
    for i, (x, y, w, h) in enumerate(gt_boxes):
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(width, round(x + w)), min(height, round(y + h))
        if x1 > x0 and y1 > y0:
            out[i] = np.count_nonzero(mask[y0:y1, x0:x1]) / ((x1 - x0) * (y1 - y0))
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4 as x, y, w, h) with every box in ``b`` (M, 4)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ax0, ay0, ax1, ay1 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(ax0[:, None], bx0[None]), 0, None)
    ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(ay0[:, None], by0[None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass
class ProtectionTally:
    """Running counts for ``protected`` (overall and by face height) and precision."""

    faces: int = 0
    protected: int = 0
    regions: int = 0
    matched_regions: int = 0

    def __post_init__(self) -> None:
        self.by_size = {name: [0, 0] for name, _, _ in SIZE_BINS}

    def add(
        self,
        gt_boxes: np.ndarray,
        ignore: np.ndarray,
        hidden: Sequence[HiddenFace],
        width: int,
        height: int,
        min_coverage: float = 0.8,
        cov: np.ndarray | None = None,
    ) -> np.ndarray:
        """Count one image; returns the coverage of each ground-truth face.

        ``cov`` may pass coverage already computed by :func:`coverage` for the same regions (to count
        one image in several sets without rasterizing its regions again).
        """
        if cov is None:
            cov = coverage(gt_boxes, hidden, width, height)
        counted = ~ignore
        ok = cov >= min_coverage
        self.faces += int(counted.sum())
        self.protected += int((ok & counted).sum())
        for name, lo, hi in SIZE_BINS:
            sel = counted & (gt_boxes[:, 3] >= lo) & (gt_boxes[:, 3] < hi)
            self.by_size[name][0] += int(sel.sum())
            self.by_size[name][1] += int((ok & sel).sum())
        det = np.asarray([h.face.bbox for h in hidden], np.float64).reshape(-1, 4)
        self.regions += len(det)
        if len(det) and len(gt_boxes):
            self.matched_regions += int((iou_matrix(det, gt_boxes).max(axis=1) >= 0.5).sum())
        return cov

    @property
    def protected_share(self) -> float:
        return self.protected / self.faces if self.faces else float("nan")

    @property
    def precision(self) -> float:
        return self.matched_regions / self.regions if self.regions else float("nan")
