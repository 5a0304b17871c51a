"""``faceveil eval tradeoff``: protection and re-identification against utility, over a grid of settings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceveil.errors import MissingExtraError, UsageError

EPILOG = """examples:
  faceveil eval tradeoff --detection-set ../shared/data/wider-val-parade \\
      --detection-set ../shared/data/facemask-voc --detection-set ../shared/data/dlib-faces-coco \\
      --images ../shared/data/imagenet-sample/images --labels ../shared/data/imagenet-sample/labels.csv \\
      --detectors default,yunet --thresholds own,0.5,0.7 --methods blur,pixelate -o tradeoff/
  faceveil eval tradeoff --detection-set wider/ --images imgs/ --labels labels.csv --limit 200 \\
      --margins 0.1,0.35 --shapes ellipse,box --max-drop 1 --min-protected wider-val-parade=0.88

Thresholds: `own` is each detector's own default (for `default`: YuNet 0.3, CenterFace 0.2); a number
applies to every member of a fused detector. Methods: blur, pixelate, box, or with their main
parameter: blur:0.1 (sigma as a share of the region), pixelate:12 (cells across), box:128 (fill).
Detections are cached per detector and image at a low score (in --cache), so sweeping thresholds,
methods, shapes or margins runs each detector once per image. Writes tradeoff.png (one panel per
detection set: x top-1 drop, y protected; plus re-identification), report.md (the table and the
Pareto front) and tradeoff.json into -o."""


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``tradeoff`` to the ``eval`` sub-commands."""
    p = sub.add_parser(
        "tradeoff",
        help="sweep thresholds x methods x detectors: protection and re-id against top-1 drop",
        description="Measure every combination of detectors, thresholds, methods, mask shapes and "
        "margins on annotated face sets (protected, precision, re-identification with SFace) and on a "
        "labelled image set (top-1 drop of an ImageNet classifier with a 95 % paired-bootstrap "
        "interval, images touched); plot privacy against utility and list the Pareto front.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--detection-set",
        dest="detection_sets",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="annotated face set (WIDER FACE, Pascal VOC or COCO, as for `eval detection`); repeatable",
    )
    p.add_argument("--images", type=Path, metavar="DIR", help="utility set: folder of the original images")
    p.add_argument("--labels", type=Path, metavar="CSV", help="utility set: labels (file,class_index,...)")
    grid = p.add_argument_group("the grid (comma-separated lists)")
    grid.add_argument("--detectors", "--detector", default="default", help="(default: %(default)s)")
    grid.add_argument(
        "--thresholds", "--threshold", default="own,0.5,0.7", help="`own` or numbers (default: %(default)s)"
    )
    grid.add_argument("--methods", "--method", default="blur", help="(default: %(default)s)")
    grid.add_argument("--shapes", "--shape", default="ellipse", help="ellipse, box (default: %(default)s)")
    grid.add_argument("--margins", "--margin", default="0.35", help="(default: %(default)s)")
    p.add_argument(
        "--difficulty",
        choices=["easy", "medium", "hard", "all"],
        default="hard",
        help="WIDER FACE subset(s) for the table and plot; the JSON has all (default: %(default)s)",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N labelled images only")
    p.add_argument(
        "--model", default="mobilenet_v2", metavar="NAME|PATH", help="classifier, as for `eval utility`"
    )
    p.add_argument("--no-reid", dest="reid", action="store_false", help="skip the re-identification figure")
    p.add_argument(
        "--min-face", type=float, default=32.0, help="re-id counts hidden faces this tall or more (px; 32)"
    )
    goals = p.add_argument_group("goals (optional: mark the points that meet them)")
    goals.add_argument("--max-drop", type=float, default=None, metavar="POINTS", help="largest top-1 drop")
    goals.add_argument(
        "--min-protected",
        action="append",
        default=[],
        metavar="SET=VALUE",
        help="least protected on a set (`facemask-voc=0.94`, `wider-val-parade/hard=0.88`); repeatable",
    )
    goals.add_argument("--max-reid", type=float, default=None, metavar="PERCENT", help="largest re-id figure")
    goals.add_argument(
        "--reid-figure",
        choices=["share", "true_share", "identified_share"],
        default="share",
        help="the re-id figure for --max-reid and the Pareto front: share (every hidden face, the audit's "
        "gate), true_share (hidden real faces only) or identified_share (rank-1) (default: %(default)s)",
    )
    p.add_argument(
        "--cache",
        default="default",
        metavar="DIR",
        help="where detections and scores are cached ($FACEVEIL_CACHE or ~/.cache/faceveil; `none`: off)",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("eval-tradeoff"),
        metavar="REPORT_DIR",
        help="where to write tradeoff.png, report.md and tradeoff.json (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures here")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: every core, max 8)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def parse_goals(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from faceveil.eval.tradeoff import Goals

    goals = Goals(reid_figure=args.reid_figure)
    if args.max_drop is not None:
        if args.max_drop < 0:
            raise UsageError("--max-drop must be 0 or more (points)")
        goals.max_top1_drop = args.max_drop / 100.0
    if args.max_reid is not None:
        if not 0 <= args.max_reid <= 100:
            raise UsageError("--max-reid must be a percentage (0 to 100)")
        goals.max_reid_share = args.max_reid / 100.0
    for item in args.min_protected:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name or not 0 <= number <= 1:
            raise UsageError(f"--min-protected {item!r}: use SET=VALUE with VALUE between 0 and 1")
        goals.min_protected[name] = number
    return goals


def run(args: argparse.Namespace) -> int:
    """Handler: 0 when the sweep ran (whatever it found); 2 for usage or data errors."""
    from faceveil.eval.tradeoff import parse_threshold, run_tradeoff, text_table, write_outputs

    try:
        __import__("matplotlib")
    except ImportError as exc:
        raise MissingExtraError("faceveil eval tradeoff", "eval") from exc
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be 1 or more")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be 1 or more")
    if (args.images is None) != (args.labels is None):
        raise UsageError("--images and --labels go together")
    if not args.detection_sets and args.images is None:
        raise UsageError("give at least one --detection-set, or --images and --labels")
    try:
        margins = [float(m) for m in _list(args.margins)]
    except ValueError as exc:
        raise UsageError(f"--margins {args.margins!r}: use numbers such as 0.1,0.35") from exc
    thresholds = [parse_threshold(t) for t in _list(args.thresholds)]
    goals = parse_goals(args)
    cache = None if args.cache.lower() == "none" else args.cache
    result = run_tradeoff(
        args.detection_sets,
        args.images,
        args.labels,
        detectors=_list(args.detectors),
        thresholds=thresholds,
        methods=_list(args.methods),
        shapes=_list(args.shapes),
        margins=margins,
        limit=args.limit,
        difficulty=args.difficulty,
        reid=args.reid,
        min_face=args.min_face,
        goals=goals,
        model=args.model,
        cache_dir=cache,
        threads=args.threads,
        progress=not args.quiet,
        log=lambda text: print(f"faceveil: {text}", file=sys.stderr),
    )
    written = write_outputs(result, args.out, args.json)
    print(text_table(result), end="")
    print(f"report: {written['markdown']}  plot: {written['plot']}", file=sys.stderr)
    return 0
