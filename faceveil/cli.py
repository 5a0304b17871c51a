"""The ``faceveil`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from faceveil import __version__
from faceveil.detectors.options import add_detector_arguments, detector_spec
from faceveil.errors import FaceveilError, UsageError
from faceveil.plugins import add_command_modules
from faceveil.progress import Progress
from faceveil.types import Settings

DEFAULTS = Settings()

COMMAND_MODULES = ("faceveil.eval.cli", "faceveil.audit.cli", "faceveil.detectors.cli")
"""Modules adding sub-commands: each has ``add_commands(subparsers)`` and sets ``handler`` on its parsers."""

EPILOG = """examples:
  faceveil run photos/ -o photos-anon/                 blur every face under photos/
  faceveil run 'shots/**/*.jpg' -o out/ --method pixelate
  faceveil detect photos/ -o detections/ --min-score 0.2
  faceveil demo                                        before/after on a sample picture
  faceveil audit photos-anon/ --originals photos/      residual faces and re-identification
  faceveil eval detection --dataset wider-val/         AP, recall, precision, protected
  faceveil models                                      every detector, installed or not

exit codes: 0 all inputs done, 1 some inputs failed, 2 usage error, 130 interrupted (re-run to resume)"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs", nargs="+", metavar="IN", help="image files, folders (recursive) or glob patterns"
    )
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output folder")
    add_detector_arguments(p, default="default")
    p.add_argument(
        "--allow-cloud",
        action="store_true",
        help="allow cloud detectors (rekognition, gcv) to send images to their service (see docs/cloud.md)",
    )
    p.add_argument("-j", "--jobs", type=int, default=None, help="worker processes (default: every core)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULTS.max_pixels,
        help="refuse images larger than this many pixels, before decoding (default: %(default)s)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceveil",
        description="Find every face in images, hide it, and keep a machine-readable record of it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"faceveil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="anonymize images into an output folder",
        description="Write an anonymized copy of every input image to OUT (same relative path and "
        "format), plus OUT/faces.jsonl and OUT/faces.coco.json. Re-running resumes.",
    )
    _common(run)
    run.add_argument(
        "--method",
        default="blur",
        choices=["blur", "pixelate", "box"],
        help="how faces are hidden (default: blur)",
    )
    run.add_argument(
        "--shape", default="ellipse", choices=["ellipse", "box"], help="mask shape (default: ellipse)"
    )
    run.add_argument(
        "--margin",
        type=float,
        default=DEFAULTS.margin,
        help="grow each face box by this share of its size on every side (default: %(default)s)",
    )
    run.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="detection score threshold for every detector; for thorough, the agreement of its runs "
        "(default: each detector's own, recall-leaning)",
    )
    run.add_argument(
        "--quality",
        type=int,
        default=None,
        help="JPEG/WebP/HEIF quality of re-encoded files (default: keep the source's JPEG quality)",
    )
    run.add_argument(
        "--keep-metadata",
        action="store_true",
        help="copy files with no face byte for byte (default: strip EXIF/GPS/XMP/IPTC/thumbnails)",
    )

    det = sub.add_parser(
        "detect",
        help="write detections only (no images)",
        description="Detect faces and write OUT/faces.jsonl and OUT/faces.coco.json, no images.",
    )
    _common(det)
    det.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="keep detections down to this score (default: the detector's own threshold, so the faces "
        "written are those `run` would hide)",
    )

    demo = sub.add_parser(
        "demo",
        help="before/after on a sample picture, no data needed",
        description="Anonymize scikit-image's 'astronaut' sample and write a before/after image.",
    )
    demo.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("faceveil-demo.png"),
        help="where to write the before/after picture (default: %(default)s)",
    )
    demo.add_argument("--method", default="blur", choices=["blur", "pixelate", "box"])
    demo.add_argument("--detector", default="default")
    add_command_modules(sub, COMMAND_MODULES)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 some inputs failed, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "handler"):
            return args.handler(args)
        if args.command == "demo":
            from faceveil.demo import run_demo

            return run_demo(args.output, args.method, args.detector)
        return _run(args)
    except UsageError as exc:
        print(f"faceveil: error: {exc}", file=sys.stderr)
        return 2
    except FaceveilError as exc:
        print(f"faceveil: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `faceveil models | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(
            "\nfaceveil: interrupted; the journal is consistent, run the same command again to resume",
            file=sys.stderr,
        )
        return 130


def _run(args: argparse.Namespace) -> int:
    from faceveil.pipeline import run

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be 1 or more")
    if args.max_pixels < 1:
        raise UsageError("--max-pixels must be 1 or more")
    if args.allow_cloud:
        os.environ["FACEVEIL_ALLOW_CLOUD"] = "1"
    mode = args.command
    detector = detector_spec(args) or DEFAULTS.detector
    if mode == "detect":
        if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
            raise UsageError("--min-score must be between 0 and 1")
        settings = Settings(detector=detector, threshold=args.min_score, max_pixels=args.max_pixels)
    else:
        if args.quality is not None and not 1 <= args.quality <= 100:
            raise UsageError("--quality must be between 1 and 100")
        if args.margin < 0:
            raise UsageError("--margin must be 0 or more")
        if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
            raise UsageError("--threshold must be between 0 and 1")
        settings = Settings(
            detector=detector,
            threshold=args.threshold,
            method=args.method,
            shape=args.shape,
            margin=args.margin,
            quality=args.quality,
            strip_metadata=not args.keep_metadata,
            max_pixels=args.max_pixels,
        )
    bar = Progress(label="faceveil", enabled=not args.quiet)
    try:
        summary = run(args.inputs, args.output, settings, mode, args.jobs, bar.start, bar.update)
    finally:
        bar.close()
    _print_summary(summary, args.output)
    return summary.exit_code


def _print_summary(summary: object, out: Path) -> None:
    from faceveil.pipeline import Summary

    assert isinstance(summary, Summary)
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    parts = [f"{summary.files} files", f"{summary.done} done"]
    if summary.resumed:
        parts.append(f"{summary.resumed} already done")
    parts += [f"{summary.skipped} skipped", f"{summary.failed} failed", f"{summary.faces} faces"]
    print(
        f"faceveil: {', '.join(parts)} in {summary.seconds:.1f} s ({rate:.1f} images/s) → {out}",
        file=sys.stderr,
    )
    for path, reason in summary.errors[:20]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    if len(summary.errors) > 20:
        print(f"  ... and {len(summary.errors) - 20} more (see {out / 'faces.jsonl'})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
