"""Fusing several detectors' boxes into one set without duplicate masks (weighted box fusion)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceveil.detectors.base import Detector
from faceveil.types import Face

VOTE_FLOOR = 0.05
"""The score down to which a voting fusion's members report faces."""


def fuse_faces(faces: Sequence[Face], iou: float = 0.3) -> list[Face]:
    """Merge overlapping detections (IoU > ``iou``) into one score-weighted box per face.

    Greedy by score: the best free face takes every free face overlapping it. The merged face keeps
    the best score, the best-scoring landmarks, and names every detector that found it
    (``yunet+centerface``). Overlapping pairs are found once by a sweep along x, so thousands of
    low-score boxes fuse quickly.
    """
    if len(faces) < 2:
        return list(faces)
    return [_merged([faces[i] for i in group], faces[group[0]].score) for group in _groups(faces, iou)]


def vote_faces(found: Sequence[Sequence[Face]], iou: float, threshold: float) -> list[Face]:
    """Fuse several detectors' faces, scoring each fused face by how much the detectors agree on it.

    ``found`` holds one list per detector. Faces are grouped as by :func:`fuse_faces`; a group's score
    is the mean over the detectors of each one's best score in the group (0 for a detector that did
    not find it), and groups scoring below ``threshold`` are dropped. A face several detectors find at
    modest scores thus outranks one a single detector finds, which is what separates crowds' small
    faces from hands and badges.
    """
    faces = [face for found_by_one in found for face in found_by_one]
    finder = [k for k, found_by_one in enumerate(found) for _ in found_by_one]
    voted = []
    for group in _groups(faces, iou):
        best = np.zeros(len(found))
        for i in group:
            best[finder[i]] = max(best[finder[i]], faces[i].score)
        agreement = float(best.sum()) / len(found)
        if agreement >= threshold:
            voted.append(_merged([faces[i] for i in group], agreement))
    return voted


def _groups(faces: Sequence[Face], iou: float) -> list[list[int]]:
    """Greedy by score: each free face, best first, with every free face overlapping it (IoU > ``iou``).

    Groups hold indices into ``faces``, the group's best face first.
    """
    order = sorted(range(len(faces)), key=lambda i: -faces[i].score)
    boxes = np.asarray([faces[i].bbox for i in order], np.float64).reshape(-1, 4)
    ptr, cols = _overlap_graph(boxes, iou)
    free = np.ones(len(order), bool)
    groups = []
    for i in range(len(order)):
        if not free[i]:
            continue
        near = cols[ptr[i] : ptr[i + 1]]
        group = near[free[near]]
        group = group if group.size else np.array([i])
        free[group] = False
        groups.append([order[j] for j in group])
    return groups


def _merged(group: Sequence[Face], score: float) -> Face:
    """One face for a group: the score-weighted mean box, the first landmarks, every detector's name."""
    weights = np.asarray([f.score for f in group], np.float64)
    boxes = np.asarray([f.bbox for f in group], np.float64)
    box = (boxes * weights[:, None]).sum(axis=0) / weights.sum()
    names = list(dict.fromkeys(f.detector for f in group))
    landmarks = next((f.landmarks for f in group if f.landmarks is not None), None)
    return Face(tuple(float(v) for v in box), score, "+".join(names), landmarks)  # type: ignore[arg-type]


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
    """Runs several detectors on the same image and fuses their boxes.

    Without ``vote`` each member keeps its own threshold and every face any member finds is kept
    (:func:`fuse_faces`). With ``vote`` the members report everything down to :data:`VOTE_FLOOR` and a
    fused face is kept when the members' agreement reaches ``vote`` (:func:`vote_faces`); a threshold
    given to :meth:`detect` then sets that agreement.
    """

    def __init__(
        self,
        members: Sequence[Detector],
        iou: float = 0.3,
        name: str | None = None,
        vote: float | None = None,
    ) -> None:
        self.members = list(members)
        self.iou = iou
        self.name = name or "+".join(m.name for m in self.members)
        self.vote = vote

    @property
    def threshold(self) -> float | None:
        """The fused detector's own threshold: the agreement it keeps faces at (None without a vote)."""
        return self.vote

    def member_threshold(self, threshold: float | None) -> float | None:
        """The threshold each member is run at when the fused detector is asked for ``threshold``."""
        return VOTE_FLOOR if self.vote is not None else threshold

    def combine(self, found: Sequence[Sequence[Face]], threshold: float | None = None) -> list[Face]:
        """The fused faces from each member's faces (found at :meth:`member_threshold`)."""
        if self.vote is None:
            return fuse_faces([face for faces in found for face in faces], self.iou)
        return vote_faces(found, self.iou, self.vote if threshold is None else threshold)

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Every member's faces, fused (see the class docstring for what ``threshold`` sets)."""
        member = self.member_threshold(threshold)
        return self.combine([m.detect(rgb, member) for m in self.members], threshold)
