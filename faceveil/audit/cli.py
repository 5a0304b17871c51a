"""``faceveil audit OUT --originals IN``: the privacy audit's command line and its report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from faceveil.errors import FaceveilError, UsageError
from faceveil.progress import Progress

DESCRIPTION = """Check an anonymized folder before it is released.

Residual faces: a second face detector, different from the run's, looks for faces in every
anonymized file at a sensitive threshold. Finds inside a hidden region (a face still visible
through the obfuscation) are listed apart from finds outside every region (faces the run may have
missed), and all of them are cropped onto a PNG contact sheet for a person to look at.

Re-identification: every recorded face is cut out of the original and of the anonymized file with
the same alignment and embedded with SFace; a cosine of 0.363 or more (OpenCV's threshold) means a
face recogniser would still match the person. The share of such faces is given overall, for faces
at least --min-face px tall, and by face height."""

EPILOG = """examples:
  faceveil audit photos-anon/ --originals photos/
  faceveil audit photos-anon/ --originals photos/ --json audit.json --report audit.md --max-reid-share 0.01

exit codes: 0 every limit kept, 1 a limit was exceeded (the audit can gate a release in CI),
2 usage or input error (no faces.jsonl, originals missing or different, sizes that do not match)"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit`` command."""
    p = sub.add_parser(
        "audit",
        help="check an anonymized folder: residual faces and re-identification",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT", help="output folder of `faceveil run`")
    p.add_argument(
        "--originals",
        required=True,
        type=Path,
        metavar="IN",
        help="the folder that was anonymized (originals are matched by relative path)",
    )
    p.add_argument(
        "--detector",
        default=None,
        metavar="NAME",
        help="residual face detector (default: the first installed of retinaface, mtcnn, ssd, haar, "
        "blazeface, dlib-hog, dlib-cnn, yunet, centerface that the run did not use)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.2,
        metavar="X",
        help="residual detector's score threshold; low finds more (default: %(default)s)",
    )
    p.add_argument(
        "--max-residual-share",
        type=float,
        default=None,
        metavar="X",
        help="exit 1 when more than this share of files has a residual find (default: no limit)",
    )
    p.add_argument(
        "--max-reid-share",
        type=float,
        default=0.01,
        metavar="X",
        help="exit 1 when more than this share of faces >= --min-face still matches, see --reid-gate "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--reid-gate",
        choices=["share", "identified_share"],
        default="share",
        help="what --max-reid-share limits: share (cosine >= 0.363 with the original) or identified_share "
        "(also closer to its own original than to any other audited face) (default: %(default)s)",
    )
    p.add_argument(
        "--min-face",
        type=float,
        default=32.0,
        metavar="PX",
        help="face height in pixels from which --max-reid-share applies (default: %(default)g)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures as JSON")
    p.add_argument("--report", type=Path, default=None, metavar="PATH.md", help="write the report (Markdown)")
    p.add_argument(
        "--sheet",
        type=Path,
        default=None,
        metavar="PATH.png",
        help="crop sheet of the residual finds (default: OUT/.faceveil/audit/residual-sheet.png)",
    )
    p.add_argument("-j", "--jobs", type=int, default=None, help="worker processes (default: every core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the audit; 0 ok, 1 a limit was exceeded, 2 usage or input error."""
    from faceveil.audit import AuditOptions, run_audit
    from faceveil.io.atomic import atomic_write_bytes

    options = AuditOptions(
        out=args.out,
        originals=args.originals,
        detector=args.detector,
        threshold=args.threshold,
        max_residual_share=args.max_residual_share,
        max_reid_share=args.max_reid_share,
        reid_gate=args.reid_gate,
        min_face=args.min_face,
        jobs=args.jobs,
        sheet=args.sheet,
    )
    for option, path in (("--json", args.json), ("--report", args.report)):
        if path is not None and path.is_dir():
            raise UsageError(f"{option} {path} is a folder: give a file name")
    bar = Progress(label="audit", enabled=not args.quiet)
    try:
        result = run_audit(options, bar.start, bar.update)
    except UsageError:
        raise
    except FaceveilError as exc:  # a model that cannot be loaded: configuration, not a failed audit
        raise UsageError(str(exc)) from exc
    finally:
        bar.close()
    figures = result.figures
    try:
        if args.json is not None:
            text = json.dumps(figures, indent=1, ensure_ascii=False) + "\n"
            atomic_write_bytes(args.json, text.encode("utf-8"))
        if args.report is not None:
            atomic_write_bytes(args.report, render_report(figures).encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror or exc}") from exc
    print(render_report(figures, max_listed=20), end="")
    return result.exit_code


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_report(figures: dict[str, Any], max_listed: int | None = None) -> str:
    """The Markdown report; every figure is named by its key path in the ``--json`` document."""
    reid, res, run = figures["reid"], figures["residual"], figures["run"]
    files, limits = figures["files"], figures["limits"]
    skipped = files["not_audited"]
    lines = [
        "# faceveil audit",
        "",
        f"- OUT: `{figures['out']}`; originals: `{figures['originals']}`",
        f"- run: detector `{run['detector'] or 'unknown'}` "
        f"(`run.detector_members`: {', '.join(run['detector_members']) or 'unknown'}), "
        f"method `{run['method'] or 'unknown'}`",
        f"- `files.audited`: {files['audited']} (not audited: {skipped['error']} failed in the run, "
        f"{skipped['skipped']} skipped, {skipped['video']} video)",
        "",
        f"## Re-identification: {reid['model']}, matched = cosine >= {reid['cosine_threshold']}",
        "",
        "| figure | faces | matched | share | identified (rank-1) | control share | mean cosine "
        "| max cosine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [
        ("reid.all", reid["all"], "all faces"),
        ("reid.min_face", reid["min_face"], f"height >= {reid['min_face']['px']:g} px"),
    ]
    rows += [
        (f"reid.by_height.{name}", group, f"{name} px tall") for name, group in reid["by_height"].items()
    ]
    for key, group, label in rows:
        lines.append(
            f"| `{key}` ({label}) | {group['faces']} | {group['matched']} | {_share(group['share'])} | "
            f"{group['identified']} | {_share(group['control_share'])} | {_num(group['mean_cosine'])} | "
            f"{_num(group['max_cosine'])} |"
        )
    marks = reid["landmarks"]
    lines += [
        "",
        "matched: cosine between original and anonymized face >= the threshold; identified: matched, and "
        "the anonymized face is closer to its own original than to any other audited face (a match between "
        "two featureless crops usually is not). control share: the share matched when each region holds its "
        "own pixels shuffled and blurred (colours kept, no layout, so no identity): the test's floor on "
        "these faces; a share near or below it is no evidence of identity left. "
        f"The limit applies to `reid.min_face.{limits['reid_gate']}`.",
        "",
        f"`reid.landmarks` (alignment source): {marks.get('record', 0)} from the record, "
        f"{marks.get('yunet', 0)} from YuNet on the original, "
        f"{marks.get('estimated', 0)} estimated from the box",
    ]
    matched = reid["matched_faces"]
    if matched:
        lines += ["", f"`reid.matched_faces` (still re-identifiable): {reid['all']['matched']}"]
        shown = matched if max_listed is None else matched[:max_listed]
        lines += [
            f"- `{m['path']}` face {m['face']}: cosine {m['cosine']:.3f}"
            f"{', rank-1' if m['identified'] else ''}, {m['height']:g} px tall, "
            f"detected by {m['detector'] or '?'} at {m['score']:.2f}"
            for m in shown
        ]
        if len(shown) < reid["all"]["matched"]:
            lines.append(f"- ... and {reid['all']['matched'] - len(shown)} more (see --json / --report)")
    independence = "" if res["independent"] else " **(not independent of the run's detector)**"
    lines += [
        "",
        f"## Residual faces: `{res['detector']}` ({res['detector_source']}) at threshold {res['threshold']:g}"
        + independence,
        "",
        "| figure | value |",
        "|---|---:|",
        f"| `residual.files_audited` | {res['files_audited']} |",
        f"| `residual.files_with_finds` | {res['files_with_finds']} |",
        f"| `residual.share` (files with a find) | {_share(res['share'])} |",
        f"| `residual.finds` | {res['finds']} |",
        f"| `residual.inside_hidden_region` (face still visible inside a hidden region) | "
        f"{res['inside_hidden_region']} |",
        f"| `residual.outside_regions` (missed-face candidates) | {res['outside_regions']} |",
        f"| `residual.files_with_outside_finds` | {res['files_with_outside_finds']} |",
        "",
        f"`residual.sheet`: {('`' + res['sheet'] + '`') if res['sheet'] else 'not written'} "
        f"(`residual.sheet_tiles`: {res['sheet_tiles']})",
    ]
    if res["files"]:
        lines += ["", "`residual.files`:"]
        shown_files = res["files"] if max_listed is None else res["files"][:max_listed]
        for item in shown_files:
            parts = [
                f"{f['score']:.2f} {'outside' if f['where'] == 'outside_regions' else 'inside'} "
                f"[{', '.join(f'{v:g}' for v in f['bbox'])}]"
                for f in item["finds"]
            ]
            lines.append(f"- `{item['path']}`: {len(item['finds'])} ({'; '.join(parts)})")
        if len(shown_files) < len(res["files"]):
            lines.append(
                f"- ... and {len(res['files']) - len(shown_files)} more files (see --json / --report)"
            )
    residual_limit = limits["max_residual_share"]
    lines += [
        "",
        "## Limits",
        "",
        f"- `limits.max_reid_share`: {limits['max_reid_share']:g} on `reid.min_face.{limits['reid_gate']}` "
        f"({_share(reid['min_face'][limits['reid_gate']])})",
        "- `limits.max_residual_share`: "
        + ("none" if residual_limit is None else f"{residual_limit:g}")
        + f" on `residual.share` ({_share(res['share'])})",
        "",
    ]
    if figures["exceeded"]:
        lines += ["**FAIL** (`exceeded`):"] + [f"- {e}" for e in figures["exceeded"]]
    else:
        lines.append("**PASS**: no limit exceeded")
    return "\n".join(lines) + "\n"
