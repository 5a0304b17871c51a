"""Privacy against utility on the shared sets: the sweep behind the choice of defaults (eval tradeoff).

Runs the tradeoff sweep on the three annotated face sets (wider-val-parade, facemask-voc, dlib-faces-coco)
and on imagenet-sample, with the targets of the trade-off issue marked:

- top-1 drop of MobileNetV2 on imagenet-sample <= 1.0 point;
- protected at least 0.88 on wider-val-parade (hard), 0.94 on facemask-voc and 1.00 on dlib-faces-coco;
- (the audit's) re-identification: reid_share <= 1 % of hidden faces >= 32 px (SFace, cosine 0.363).

Usage::

    python benchmarks/tradeoff.py [--data ../shared/data] [--grid thresholds|candidates|geometry|all]
        [--limit N] [--out bench-out/tradeoff] [--json results.json] [--threads 2]

``thresholds`` sweeps the registered detectors over thresholds (blur, ellipse, margin 0.35);
``geometry`` sweeps method, shape and margin at the default detector; ``candidates`` measures the
presets ``default`` and ``balanced`` (:mod:`faceveil.detectors.verify`) and plain YuNet at three
thresholds with blur and pixelate (the grid behind the choice recorded in BENCHMARKS.md). Detections are
cached (``$FACEVEIL_CACHE``), so a second grid on the same data runs no face detector again.
"""

from __future__ import annotations

import sys
from pathlib import Path

from catalogue import REPO, benchmark_parser

from faceveil.eval.tradeoff import Goals, run_tradeoff, text_table, write_outputs

SETS = ("wider-val-parade", "facemask-voc", "dlib-faces-coco")
GOALS = Goals(
    max_top1_drop=0.01,
    min_protected={"wider-val-parade": 0.88, "facemask-voc": 0.94, "dlib-faces-coco": 1.0},
    max_reid_share=0.01,
    reid_figure="true_share",
)
GRIDS = {
    "thresholds": {
        "detectors": ["default", "yunet"],
        "thresholds": [None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "methods": ["blur"],
        "shapes": ["ellipse"],
        "margins": [0.35],
    },
    "geometry": {
        "detectors": ["default"],
        "thresholds": [None],
        "methods": ["blur", "blur:0.1", "blur:0.05", "pixelate"],
        "shapes": ["ellipse", "box"],
        "margins": [0.0, 0.1, 0.2, 0.35],
    },
    "candidates": {
        "detectors": ["default", "balanced", "yunet"],
        "thresholds": [None, 0.5, 0.7],
        "methods": ["blur", "pixelate"],
        "shapes": ["ellipse"],
        "margins": [0.35],
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--grid", choices=[*GRIDS, "all"], default="candidates")
    parser.add_argument("--limit", type=int, default=None, help="first N images of imagenet-sample only")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "tradeoff")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-reid", dest="reid", action="store_false")
    args = parser.parse_args(argv)
    names = list(GRIDS) if args.grid == "all" else [args.grid]
    for name in names:
        grid = GRIDS[name]
        result = run_tradeoff(
            [args.data / s for s in SETS],
            args.data / "imagenet-sample" / "images",
            args.data / "imagenet-sample" / "labels.csv",
            **grid,  # type: ignore[arg-type]
            limit=args.limit,
            reid=args.reid,
            goals=GOALS,
            threads=args.threads,
            progress=sys.stderr.isatty(),
        )
        out = args.out / name if len(names) > 1 else args.out
        json_path = (
            args.json.with_name(f"{args.json.stem}-{name}{args.json.suffix}")
            if (args.json and len(names) > 1)
            else args.json
        )
        written = write_outputs(result, out, json_path)
        print(f"## {name}\n")
        print(text_table(result))
        meeting = [p.point.name for p in result.points if p.meets]
        print(f"meeting every goal: {', '.join(meeting) or 'none'}")
        print(f"report: {written['markdown']}  plot: {written['plot']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
