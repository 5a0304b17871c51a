"""AP, protected and precision of every detector and preset on the shared face sets (eval detection).

Each (detector, set) pair is one ``evaluate_detection`` run, as ``faceveil eval detection --dataset SET
--detector NAME`` does it: AP at IoU 0.5 (WIDER's ignore rule; on the parade the hard set), and at the
detector's own operating threshold the contract's ``protected`` and precision. images/s is the whole
evaluation pass over the set (decode + detection, ``--jobs`` processes, model loading included), so it
is only comparable within one run of this script.

Usage::

    python benchmarks/detection_table.py [--data ../shared/data] [--only yunet,thorough] [--jobs 2]
                                         [--json out.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from catalogue import OFFLINE, PRESETS, benchmark_parser

from faceveil import detectors
from faceveil.eval.datasets import load_dataset
from faceveil.eval.detection import DetectSettings, evaluate_detection

SETS = (("wider-val-parade", "hard"), ("facemask-voc", None), ("dlib-faces-coco", None))
LOCAL = (*OFFLINE, *PRESETS)
"""The offline detectors and the presets (cloud detectors would send the photos away)."""


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--only", default=",".join(LOCAL), help="comma-separated detector names")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    registry = detectors.registered()
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        if registry[name].available() is False:
            print(f"{name}: not installed ({', '.join(registry[name].missing())})", flush=True)
            continue
        rows[name] = {}
        for set_name, difficulty in SETS:
            dataset = load_dataset(args.data / set_name)
            subset = difficulty or next(iter(dataset.sets))
            result = evaluate_detection(
                dataset, DetectSettings(detector=name), [subset], args.jobs, official=False
            )
            figures = result.sets[subset]
            rows[name][set_name] = {
                "ap": round(figures.ap, 4),
                "protected": round(figures.protected, 4),
                "precision": round(figures.precision, 4),
                "images_per_s": round(len(dataset.images) / result.seconds, 2),
            }
        print(
            f"| {name} | "
            + " | ".join(
                f"{r['ap']:.3f} | {r['protected']:.3f} | {r['precision']:.3f} | {r['images_per_s']:.2f}"
                for r in rows[name].values()
            )
            + " |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
