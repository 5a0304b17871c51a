"""Where a recall-first detector's precision goes on wider-val-parade, and what a higher threshold buys.

Runs a detector (default: the ``thorough`` preset) once over the parade set, keeping every member's
faces down to a low score, then:

1. at the detector's own thresholds, sorts the regions that count against precision (IoU < 0.5 with
   every annotated face, ignored ones included) by their best IoU with an annotated face
   (0.3-0.5: a found face, box placed differently; 0.05-0.3: partial overlap, e.g. a second box on
   a face or a head; none: no annotated face there) and by height, and counts the 0.3-0.5 regions
   that are the only region on their annotated face;
2. sweeps the threshold ``--threshold`` sets (one for every member; for a voting detector such as
   ``thorough``, the members' agreement) and prints protected (hard set) against precision, so the
   best protection at a given precision can be read off.

Usage::

    python benchmarks/precision.py [--data ../shared/data] [--detector thorough] [--json out.json]

About 6 minutes for ``thorough`` on 2 cores.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
from catalogue import detector_args

from faceveil import detectors
from faceveil.detectors.fusion import FusedDetector, fuse_faces
from faceveil.eval.datasets import load_dataset
from faceveil.eval.detection import detect_two_levels
from faceveil.eval.metrics import ProtectionTally, iou_matrix
from faceveil.io.image import read_picture
from faceveil.methods.regions import region_for
from faceveil.types import Face, HiddenFace

SET, DIFFICULTY = "wider-val-parade", "hard"
SHAPE, MARGIN = "ellipse", 0.35
LOW = 0.05
SWEEP = (None, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
VOTE_SWEEP = (None, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
"""For a voting detector (``thorough``): its agreement threshold instead of one for every member."""
HEIGHTS = ((0, 10, "<10"), (10, 20, "10-20"), (20, 40, "20-40"), (40, float("inf"), ">=40"))


def overlap_kind(best_iou: float) -> str:
    """The category of an unmatched region by its best IoU with an annotated face."""
    if best_iou >= 0.3:
        return "0.3-0.5"
    return "0.05-0.3" if best_iou > 0.05 else "none"


def height_name(height: float) -> str:
    """The height bin of a box ``height`` pixels tall."""
    return next(name for lo, hi, name in HEIGHTS if lo <= height < hi)


def score(images: list, found: list[list[Face]]) -> tuple[ProtectionTally, Counter, int]:
    """Protected/precision on the hard set, the unmatched regions by (overlap kind, height), and how many
    0.3-0.5 regions are alone: their annotated face found, but its only box placed too differently."""
    tally, unmatched, alone = ProtectionTally(), Counter(), 0
    for (gt, width, height), faces in zip(images, found, strict=True):
        hidden = [HiddenFace(f, region_for(f, SHAPE, MARGIN, width, height)) for f in faces]
        tally.add(gt.boxes, gt.ignore_by_set[DIFFICULTY], hidden, width, height)
        if not faces:
            continue
        boxes = np.asarray([f.bbox for f in faces], np.float64)
        overlaps = iou_matrix(boxes, gt.boxes) if len(gt.boxes) else np.zeros((len(faces), 1))
        best, nearest = overlaps.max(axis=1), overlaps.argmax(axis=1)
        matched_faces = set(nearest[best >= 0.5].tolist())
        for box, value, face in zip(boxes, best, nearest, strict=True):
            if value >= 0.5:
                continue
            kind = overlap_kind(float(value))
            unmatched[(kind, height_name(float(box[3])))] += 1
            alone += kind == "0.3-0.5" and face not in matched_faces
    return tally, unmatched, alone


def main() -> int:
    args = detector_args(__doc__, "thorough")
    dataset = load_dataset(args.data / SET)
    detector = detectors.create(args.detector, threads=args.threads)
    members = detector.members if isinstance(detector, FusedDetector) else [detector]
    iou = detector.iou if isinstance(detector, FusedDetector) else 0.3
    images, per_member = [], []
    for gt in dataset.images:
        rgb = read_picture(gt.path).rgb8()
        images.append((gt, rgb.shape[1], rgb.shape[0]))
        per_member.append([detect_two_levels(m, rgb, None, LOW) for m in members])
        print(f"\r{len(images)}/{len(dataset.images)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    voting = isinstance(detector, FusedDetector) and detector.vote is not None
    rows = []
    for threshold in VOTE_SWEEP if voting else SWEEP:
        found = []
        for levels in per_member:
            if voting:
                found.append(detector.combine([curve for curve, _ in levels], threshold))
                continue
            if threshold is None:
                faces = [f for _, operating in levels for f in operating]
            else:
                faces = [f for curve, _ in levels for f in curve if f.score >= threshold]
            found.append(fuse_faces(faces, iou) if len(members) > 1 else faces)
        tally, unmatched, alone = score(images, found)
        rows.append(
            {
                "threshold": "own" if threshold is None else threshold,
                "protected": round(tally.protected_share, 4),
                "precision": round(tally.precision, 4),
                "regions": tally.regions,
                "matched_regions": tally.matched_regions,
                "unmatched": {f"{k} / {h}": n for (k, h), n in sorted(unmatched.items())},
                "alone": alone,
            }
        )
    own = rows[0]
    print(f"{args.detector} on {SET} ({DIFFICULTY}), {SHAPE} margin {MARGIN}")
    print(
        f"own thresholds: protected {own['protected']:.3f}, precision {own['precision']:.3f} "
        f"({own['matched_regions']} of {own['regions']} regions match an annotated face)"
    )
    print("unmatched regions by best IoU with an annotated face (columns) and box height (rows):")
    kinds = ("0.3-0.5", "0.05-0.3", "none")
    print(f"{'height':>8} " + " ".join(f"{k:>9}" for k in kinds))
    for _, _, h in HEIGHTS:
        print(f"{h:>8} " + " ".join(f"{own['unmatched'].get(f'{k} / {h}', 0):>9}" for k in kinds))
    print(f"{own['alone']} of the 0.3-0.5 regions are the only region on their annotated face")
    print("\nthreshold  protected  precision  regions")
    for row in rows:
        print(
            f"{row['threshold']!s:>9}  {row['protected']:>9.3f}  {row['precision']:>9.3f}  "
            f"{row['regions']:>7}"
        )
    if args.json:
        args.json.write_text(json.dumps({"detector": args.detector, "set": SET, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
