"""Fusing several detectors' boxes into one set without duplicate masks (weighted box fusion)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceveil.detectors.base import Detector
from faceveil.types import Face


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x, y, w, h box with each row of ``boxes``."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def fuse_faces(faces: Sequence[Face], iou: float = 0.3) -> list[Face]:
    """Merge overlapping detections (IoU > ``iou``) into one score-weighted box per face.

    The merged face keeps the best score, the best-scoring landmarks, and names every detector
    that found it (``yunet+centerface``).
    """
    if len(faces) < 2:
        return list(faces)
    order = sorted(faces, key=lambda f: -f.score)
    boxes = np.asarray([f.bbox for f in order], np.float64)
    scores = np.asarray([f.score for f in order], np.float64)
    free = np.ones(len(order), bool)
    fused = []
    for i, best in enumerate(order):
        if not free[i]:
            continue
        group = np.nonzero(free & (iou_one_to_many(boxes[i], boxes) > iou))[0]
        group = group if group.size else np.array([i])
        free[group] = False
        weights = scores[group]
        box = (boxes[group] * weights[:, None]).sum(axis=0) / weights.sum()
        names = list(dict.fromkeys(order[j].detector for j in group))
        landmarks = next((order[j].landmarks for j in group if order[j].landmarks is not None), None)
        fused.append(Face(tuple(float(v) for v in box), best.score, "+".join(names), landmarks))  # type: ignore[arg-type]
    return fused


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
