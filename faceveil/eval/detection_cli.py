"""``faceveil eval detection``: AP, recall, precision and ``protected`` on an annotated face set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceveil.detectors.options import add_detector_arguments, detector_spec
from faceveil.errors import UsageError

EPILOG = """examples:
  faceveil eval detection --dataset ../shared/data/wider-val-parade
  faceveil eval detection --dataset facemask-voc/ --detector yunet --threshold 0.5 --json figures.json

The dataset folder holds WIDER FACE (wider_face_*_bbx_gt.txt, with difficulty.csv or the official
ground_truth/*.mat for easy/medium/hard), Pascal VOC (annotations/*.xml) or COCO (*.json) ground
truth, and the images (in images/ or beside the annotations). Writes report.md, report.html,
pr_curve.png and protected_by_size.png into --out (for WIDER FACE also wider_predictions/, the
detections in the official evaluation tools' layout)."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``detection`` to the ``eval`` sub-commands."""
    p = sub.add_parser(
        "detection",
        help="detection quality and protection against ground truth",
        description="Run a detector over an annotated face set and report AP (IoU 0.5, WIDER's ignore\n"
        "rule), recall and precision at the operating threshold, and the share of faces protected,\n"
        "overall and by face size, with a precision-recall plot.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="annotated face set")
    add_detector_arguments(p, default="default")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="operating score threshold for recall, precision and protected (default: each detector's own)",
    )
    p.add_argument(
        "--difficulty",
        choices=["easy", "medium", "hard", "all"],
        default="all",
        help="WIDER FACE set(s) to report (default: all three from one detection pass)",
    )
    p.add_argument(
        "--shape", default="ellipse", choices=["ellipse", "box"], help="mask shape (default: ellipse)"
    )
    p.add_argument(
        "--margin",
        type=float,
        default=0.35,
        help="grow each face box by this share of its size (default: 0.35)",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        metavar="REPORT_DIR",
        help="where to write the report and plots (default: ./eval-detection-<dataset folder name>)",
    )
    p.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here"
    )
    p.add_argument("-j", "--jobs", type=int, default=None, help="worker processes (default: every core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler: returns the exit code (0 done; 2 usage or data error, raised as UsageError)."""
    from faceveil.eval.datasets import ALL, find_wider_mats, load_dataset
    from faceveil.eval.detection import DetectSettings, evaluate_detection
    from faceveil.eval.report import AGREEMENT, summary_table, write_json, write_report

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be 1 or more")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError("--threshold must be between 0 and 1")
    if args.margin < 0:
        raise UsageError("--margin must be 0 or more")
    _check_extra("matplotlib")
    dataset = load_dataset(args.dataset, None if args.difficulty == ALL else args.difficulty)
    if dataset.format == "wider" and find_wider_mats(dataset.root) is not None:
        _check_extra("scipy")  # for the official-evaluation check
    sets = list(dataset.sets) if args.difficulty == ALL else [args.difficulty]
    settings = DetectSettings(detector_spec(args) or "default", args.threshold, args.shape, args.margin)
    out = args.out or Path(f"eval-detection-{dataset.root.resolve().name}")
    bar = _Bar(enabled=not args.quiet)
    try:
        result = evaluate_detection(
            dataset, settings, sets, args.jobs, on_start=bar.start, on_image=bar.update
        )
    finally:
        bar.close()
    written = write_report(result, out)
    if dataset.format == "wider":
        # The curve's detections in the official layout, for WIDER's own evaluation tools.
        from faceveil.eval.detection import wider_predictions
        from faceveil.eval.wider_official import write_predictions

        written["wider_predictions"] = out / "wider_predictions"
        write_predictions(written["wider_predictions"], wider_predictions(result.detections))
    data = result.to_json()
    data["report"] = {k: str(v) for k, v in written.items()}
    if args.json:
        write_json(data, args.json)
    print(summary_table(result))
    print(f"report: {written.get('html', written['pr_curve'])}", file=sys.stderr)
    for name, s in result.sets.items():
        if s.official_ap is not None and abs(s.ap - s.official_ap) > AGREEMENT:
            print(
                f"faceveil: warning: {name} AP {s.ap:.4f} differs from the official algorithm's "
                f"{s.official_ap:.4f} by more than {AGREEMENT}",
                file=sys.stderr,
            )
    for warning in dataset.warnings[:5]:
        print(f"faceveil: note: {warning}", file=sys.stderr)
    return 0


def _check_extra(module: str) -> None:
    """Fail before any work when a module of the ``eval`` extra is missing."""
    from faceveil.errors import MissingExtraError

    try:
        __import__(module)
    except ImportError as exc:
        raise MissingExtraError("faceveil eval detection", "eval") from exc


class _Bar:
    """A tqdm bar on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def start(self, total: int) -> None:
        if self.enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc="detecting", dynamic_ncols=True, file=sys.stderr)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
