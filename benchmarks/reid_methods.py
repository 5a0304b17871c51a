"""Re-identification (SFace, cosine >= 0.363) of hidden faces >= 32 px: methods against controls.

For each face set the detector's faces are hidden in memory (ellipse, margin 0.35, as ``faceveil run``)
with each method, and every face at least 32 px tall is embedded before and after with the same
alignment, as ``faceveil audit`` does. Two controls carry no identity by construction:

- ``shuffle-blur``: the region's pixels shuffled, then blurred (its colours, none of its layout): the
  control ``faceveil audit`` reports as ``control_share``;
- ``shuffle-mosaic``: the 8 x 8 mosaic with its cells shuffled (pixelate's look, none of the layout).

A face whose original still "matches" a control is one SFace cannot tell from a colour patch, so the
share the controls reach is the floor of the cosine test on that set. Also printed: the share among
hidden faces that are annotated faces (IoU >= 0.5 with the ground truth), since a false detection
(a shoulder, a drum) is no one to re-identify.

Usage::

    python benchmarks/reid_methods.py [--data ../shared/data] [--detector default] [--json out.json]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from catalogue import detector_args

from faceveil import detectors, methods
from faceveil.audit.reid import COSINE_THRESHOLD, SFace, estimate_landmarks, face_row, identity_free
from faceveil.eval.datasets import load_dataset
from faceveil.eval.metrics import iou_matrix
from faceveil.io.image import read_picture
from faceveil.methods.pixelate import Pixelate
from faceveil.methods.regions import region_for
from faceveil.types import Region

SETS = ("wider-val-parade", "facemask-voc", "dlib-faces-coco")
MIN_FACE = 32.0
SHAPE, MARGIN = "ellipse", 0.35


class ShuffleMosaic(Pixelate):
    """Control: pixelate's 8 x 8 cells in random order."""

    def transform(self, roi: np.ndarray, size: float) -> np.ndarray:
        cell = max(2.0, size / self.cells)
        h, w = roi.shape[:2]
        small = cv2.resize(
            roi, (max(1, round(w / cell)), max(1, round(h / cell))), interpolation=cv2.INTER_AREA
        )
        flat = small.reshape(-1, small.shape[-1]).copy()
        np.random.default_rng(roi.shape[0] * 7919 + roi.shape[1]).shuffle(flat)
        return cv2.resize(flat.reshape(small.shape), (w, h), interpolation=cv2.INTER_NEAREST)


Hide = Callable[[np.ndarray, Sequence[Region]], np.ndarray]


def _with(method: Any) -> Hide:
    def hide(rgb: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
        out = rgb.copy()
        method.apply(out, regions)
        return out

    return hide


def method_table() -> dict[str, Hide]:
    """The methods measured: faceveil's own and the two controls (the audit's, and a mosaic one)."""
    return {
        "blur": _with(methods.create("blur")),
        "pixelate": _with(methods.create("pixelate")),
        "box": _with(methods.create("box")),
        "shuffle-blur": identity_free,
        "shuffle-mosaic": _with(ShuffleMosaic()),
    }


def main() -> int:
    args = detector_args(__doc__, "default")
    detector = detectors.create(args.detector, threads=args.threads)
    sface = SFace(threads=args.threads)
    table = method_table()
    results: dict[str, dict[str, dict[str, float | int]]] = {}
    for name in SETS:
        dataset = load_dataset(args.data / name)
        cosines: dict[str, list[float]] = {m: [] for m in table}
        annotated: list[bool] = []
        for gt in dataset.images:
            rgb = read_picture(gt.path).rgb8()
            faces = detector.detect(rgb)
            tall = [f for f in faces if f.bbox[3] >= MIN_FACE]
            if not tall:
                continue
            rows = [face_row(f.bbox, f.landmarks or estimate_landmarks(f.bbox)) for f in tall]
            before = sface.embed([sface.align(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), r) for r in rows])
            boxes = np.asarray([f.bbox for f in tall], np.float64)
            best = iou_matrix(boxes, gt.boxes).max(axis=1) if len(gt.boxes) else np.zeros(len(tall))
            annotated.extend(bool(v >= 0.5) for v in best)
            height, width = rgb.shape[:2]
            regions = [region_for(f, SHAPE, MARGIN, width, height) for f in faces]
            for label, hide in table.items():
                hidden = hide(rgb, regions)
                after = sface.embed([sface.align(cv2.cvtColor(hidden, cv2.COLOR_RGB2BGR), r) for r in rows])
                cosines[label].extend((before * after).sum(axis=1).tolist())
        real = np.asarray(annotated, bool)
        results[name] = {}
        for label, values in cosines.items():
            matched = np.asarray(values) >= COSINE_THRESHOLD
            results[name][label] = {
                "faces": len(values),
                "matched": int(matched.sum()),
                "share": round(float(matched.mean()), 4) if len(values) else float("nan"),
                "annotated_faces": int(real.sum()),
                "annotated_matched": int((matched & real).sum()),
                "annotated_share": round(float(matched[real].mean()), 4) if real.any() else float("nan"),
            }
        print(
            f"{name}: {len(annotated)} hidden faces >= {MIN_FACE:g} px, {int(real.sum())} of them annotated"
        )
        for label, r in results[name].items():
            print(
                f"  {label:15s} matched {r['matched']:4d}/{r['faces']} = {100 * r['share']:5.1f} %   "
                f"annotated faces {r['annotated_matched']:4d}/{r['annotated_faces']} = "
                f"{100 * r['annotated_share']:5.1f} %"
            )
    if args.json:
        args.json.write_text(json.dumps({"detector": args.detector, "sets": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
