"""Every registered detector on the shared evaluation sets: protection, precision and speed.

Each detector runs in this process at its default settings (except those in OPTIONS or --option); each
face found is hidden the way ``faceveil run`` does by default (an ellipse grown by 0.35 of the box on
every side) and scored with the team's ``ProtectionTally``: ``protected`` is the share of ground-truth
faces at least 80 % covered, precision the share of regions matching a ground-truth face (IoU >= 0.5).
Speed is detection only (images decoded beforehand, model loading excluded), over all three sets.
Usage::

    python benchmarks/detectors.py [--data ../shared/data] [--only haar,ssd] [--threads 2] [--json out.json]
                                   [--option dlib-cnn:max_side=512]

Detectors whose packages are not installed are listed as such. dlib-cnn is slow (seconds per image);
the whole run takes about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from catalogue import OFFLINE, benchmark_parser

from faceveil import detectors
from faceveil.eval.datasets import load_dataset
from faceveil.eval.metrics import ProtectionTally
from faceveil.io.image import read_picture
from faceveil.methods.regions import region_for
from faceveil.types import Face, HiddenFace

SETS = {
    "parade (hard)": ("wider-val-parade", "hard"),
    "facemask": ("facemask-voc", None),
    "dlib-faces": ("dlib-faces-coco", None),
}
SHAPE, MARGIN = "ellipse", 0.35
LOCAL = (*OFFLINE, "default")
"""Detectors measured by default: the offline ones (cloud detectors would send the photos away)."""
OPTIONS: dict[str, dict] = {"dlib-cnn": {"max_side": 320}}
"""Non-default options used here: dlib-cnn kept on small images (network <= 640 px; default 1024 px)."""


def load_sets(data: Path) -> dict[str, tuple[list, list[np.ndarray]]]:
    """Each set's ground truth and decoded RGB images, loaded once."""
    sets = {}
    for label, (folder, difficulty) in SETS.items():
        dataset = load_dataset(data / folder, difficulty)
        images = [read_picture(gt.path).rgb8() for gt in dataset.images]
        sets[label] = (dataset.images, images)
    return sets


def hide(faces: list[Face], width: int, height: int) -> list[HiddenFace]:
    """The regions ``faceveil run`` would blur for these faces by default."""
    return [HiddenFace(f, region_for(f, SHAPE, MARGIN, width, height)) for f in faces]


def measure(detector: detectors.Detector, sets: dict, threshold: float | None = None) -> dict:
    """Protection and precision per set, and detection speed over every image."""
    out: dict = {"sets": {}}
    seconds, count = 0.0, 0
    for label, (truths, images) in sets.items():
        tally = ProtectionTally()
        for gt, rgb in zip(truths, images, strict=True):
            start = time.perf_counter()
            faces = detector.detect(rgb, threshold)
            seconds += time.perf_counter() - start
            count += 1
            bad = [f.score for f in faces if not 0.0 <= f.score <= 1.0]
            if bad:
                raise SystemExit(f"{detector.name}: score outside [0, 1] on {gt.path}: {bad[:3]}")
            h, w = rgb.shape[:2]
            tally.add(gt.boxes, gt.ignore, hide(faces, w, h), w, h)
        out["sets"][label] = {
            "faces": tally.faces,
            "protected": tally.protected_share,
            "precision": tally.precision,
            "regions": tally.regions,
        }
    out["images"] = count
    out["seconds"] = seconds
    out["images_per_s"] = count / seconds if seconds else float("nan")
    return out


def parse_options(items: list[str], parser: argparse.ArgumentParser) -> dict[str, dict]:
    """``NAME:KEY=VALUE`` items (VALUE as JSON when it parses, else a string) over the defaults in OPTIONS."""
    given: dict[str, dict] = {}
    for item in items:
        name, _, assignment = item.partition(":")
        key, sep, value = assignment.partition("=")
        if not name or not key or not sep:
            parser.error(f"--option {item!r}: expected NAME:KEY=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        given.setdefault(name, {})[key] = parsed
    return {**OPTIONS, **given}


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--only", help="comma-separated detector names (default: the offline ones in LOCAL)")
    parser.add_argument("--threads", type=int, default=None, help="threads per detector (default: all cores)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="a constructor option for one detector, e.g. dlib-cnn:max_side=512 (repeatable; "
        "replaces the defaults in OPTIONS for that detector)",
    )
    args = parser.parse_args()
    infos = detectors.registered()
    names = args.only.split(",") if args.only else [n for n in LOCAL if n in infos]
    unknown = [n for n in names if n not in infos]
    if unknown:
        parser.error(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(infos)}")
    options = parse_options(args.option, parser)
    print(f"loading {', '.join(SETS)} from {args.data}", file=sys.stderr)
    sets = load_sets(args.data)
    results: dict = {}
    header = " | ".join(f"{label} protected | {label} precision" for label in SETS)
    print(f"| detector | {header} | images/s |")
    print("|---|" + "---|" * (2 * len(SETS) + 1))
    for name in names:
        info = infos[name]
        if info.available() is False:
            print(f"| {name} | not installed: pip install {info.extra} |" + " |" * (2 * len(SETS)))
            results[name] = {"installed": False}
            continue
        print(f"running {name}", file=sys.stderr)
        start = time.perf_counter()
        kwargs = options.get(name, {})
        detector = (
            info.factory(threads=args.threads, **kwargs) if kwargs else detectors.create(name, args.threads)
        )
        load = time.perf_counter() - start
        res = measure(detector, sets)
        res["load_seconds"] = load
        results[name] = res
        cells = " | ".join(f"{s['protected']:.3f} | {s['precision']:.3f}" for s in res["sets"].values())
        res["options"] = kwargs
        label = name + (f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")
        print(f"| {label} | {cells} | {res['images_per_s']:.2f} |", flush=True)
    faces = ", ".join(f"{label} {len(t)} images" for label, (t, _) in sets.items())
    print(f"\n{faces}; speed = detection only, all {sum(len(t) for t, _ in sets.values())} images.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
