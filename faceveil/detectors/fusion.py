"""Fusing several detectors' boxes into one set without duplicate masks (weighted box fusion)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceveil.detectors.base import Detector
from faceveil.types import Face


def fuse_faces(faces: Sequence[Face], iou: float = 0.3) -> list[Face]:
    """Merge overlapping detections (IoU > ``iou``) into one score-weighted box per face.

    Greedy by score: the best free face takes every free face overlapping it. The merged face keeps
    the best score, the best-scoring landmarks, and names every detector that found it
    (``yunet+centerface``). Overlapping pairs are found once by a sweep along x, so thousands of
    low-score boxes fuse quickly.
    """
    if len(faces) < 2:
        return list(faces)
    order = sorted(faces, key=lambda f: -f.score)
    boxes = np.asarray([f.bbox for f in order], np.float64)
    scores = np.asarray([f.score for f in order], np.float64)
    ptr, cols = _overlap_graph(boxes, iou)
    free = np.ones(len(order), bool)
    fused = []
    for i, best in enumerate(order):
        if not free[i]:
            continue
        near = cols[ptr[i] : ptr[i + 1]]
        group = near[free[near]]
        group = group if group.size else np.array([i])
        free[group] = False
        weights = scores[group]
        box = (boxes[group] * weights[:, None]).sum(axis=0) / weights.sum()
        names = list(dict.fromkeys(order[j].detector for j in group))
        landmarks = next((order[j].landmarks for j in group if order[j].landmarks is not None), None)
        fused.append(Face(tuple(float(v) for v in box), best.score, "+".join(names), landmarks))  # type: ignore[arg-type]
    return fused


def _overlap_graph(boxes: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists (ascending) of the boxes each box has IoU > ``iou`` with, itself included."""
    n = len(boxes)
    x0 = boxes[:, 0]
    right = boxes[:, 0] + boxes[:, 2]
    by_x = np.argsort(x0, kind="stable")
    sx0, sright = x0[by_x], right[by_x]
    # For sorted position p, partners q > p with x0 < right of p: their x ranges may overlap.
    ends = np.maximum(np.searchsorted(sx0, sright, side="left"), np.arange(n) + 1)
    counts = ends - np.arange(n) - 1
    p = np.repeat(np.arange(n), counts)
    q = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + p + 1
    a = np.concatenate([by_x[p], np.arange(n)])
    b = np.concatenate([by_x[q], np.arange(n)])
    ba, bb = boxes[a], boxes[b]
    ix0 = np.maximum(ba[:, 0], bb[:, 0])
    iy0 = np.maximum(ba[:, 1], bb[:, 1])
    ix1 = np.minimum(ba[:, 0] + ba[:, 2], bb[:, 0] + bb[:, 2])
    iy1 = np.minimum(ba[:, 1] + ba[:, 3], bb[:, 1] + bb[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    union = ba[:, 2] * ba[:, 3] + bb[:, 2] * bb[:, 3] - inter
    overlap = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    keep = overlap > iou
    self_pair = a == b
    rows = np.concatenate([a[keep], b[keep & ~self_pair]])
    cols = np.concatenate([b[keep], a[keep & ~self_pair]])
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    ptr = np.searchsorted(rows, np.arange(n + 1), side="left")
    return ptr, cols


class FusedDetector:
    """Runs several detectors on the same image and fuses their boxes."""

    def __init__(self, members: Sequence[Detector], iou: float = 0.3, name: str | None = None) -> None:
        self.members = list(members)
        self.iou = iou
        self.name = name or "+".join(m.name for m in self.members)

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Every member's faces (each at its own threshold unless one is given), fused."""
        found: list[Face] = []
        for member in self.members:
            found.extend(member.detect(rgb, threshold))
        return fuse_faces(found, self.iou)
