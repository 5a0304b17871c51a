"""The ``--detector``, ``--preset`` and ``--tta`` options every detecting command shares."""

from __future__ import annotations

import argparse

from faceveil.detectors import presets, registered
from faceveil.detectors.base import AUGMENTATIONS_HELP, parse_spec, with_augmentations
from faceveil.errors import UsageError


def add_detector_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None
) -> None:
    """Add the three options; read them back with :func:`detector_spec`."""
    names = parser.add_mutually_exclusive_group()
    shown = default or "default"
    names.add_argument(
        "--detector",
        default=None,
        metavar="SPEC",
        help="face detector (see 'faceveil models'); join several with '+' to fuse them, add '@flip,2x' "
        f"to one for test-time augmentation, e.g. yunet@2x+centerface (default: {shown})",
    )
    names.add_argument(
        "--preset",
        default=None,
        choices=presets(),
        help="a named combination: "
        + "; ".join(f"{name} ({registered()[name].summary})" for name in presets()),
    )
    parser.add_argument(
        "--tta",
        default=None,
        metavar="LIST",
        help=f"test-time augmentation for every detector named: {AUGMENTATIONS_HELP}, comma-separated "
        "(e.g. flip,2x); each run's faces are fused with the plain run's",
    )


def detector_spec(args: argparse.Namespace, default: str | None = "default") -> str | None:
    """The detector spec the options name (checked), or ``default`` when none was given."""
    spec = args.preset or args.detector
    if spec is None and args.tta is None:
        return default
    spec = with_augmentations(spec or "default", args.tta)
    if args.tta is not None and not args.tta.strip(" ,"):
        raise UsageError(f"--tta needs {AUGMENTATIONS_HELP}")
    parse_spec(spec)
    return spec
