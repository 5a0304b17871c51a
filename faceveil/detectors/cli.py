"""``faceveil models``: every registered detector, whether it is installed, where its weights come from."""

from __future__ import annotations

import argparse
import json
import sys

from faceveil.detectors.base import DetectorInfo, registered


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command."""
    parser = sub.add_parser(
        "models",
        help="list the face detectors, whether each is installed, and its weights and licence",
        description="List every registered face detector: installed or not (checked without loading any "
        "model), the pip install that adds it, where its weights come from and their licence. Use a name "
        "with --detector (join several with '+', add '@flip,2x' for test-time augmentation); presets "
        "(marked *) also with --preset.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output (a JSON list)")
    parser.set_defaults(handler=run_models)


def describe(info: DetectorInfo) -> dict[str, object]:
    """One detector as ``faceveil models --json`` shows it."""
    available = info.available()
    return {
        "name": info.name,
        "installed": available,
        "missing": info.missing(),
        "install": f"pip install {info.extra}" if info.extra else None,
        "weights": info.weights,
        "licence": info.licence,
        "summary": info.summary,
        "preset": info.preset,
    }


def run_models(args: argparse.Namespace) -> int:
    """Print the table (or JSON) of registered detectors; exit code 0."""
    rows = [describe(info) for info in registered().values()]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    table = [("detector", "installed", "install with", "weights from", "weights licence")]
    for row in rows:
        installed = {True: "yes", False: "NO", None: "?"}[row["installed"]]  # type: ignore[index]
        table.append(
            (
                str(row["name"]) + (" *" if row["preset"] else ""),
                installed,
                str(row["install"] or "(core dependency)"),
                str(row["weights"]),
                str(row["licence"]),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for i, r in enumerate(table):
        print("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(r)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    missing = [row for row in rows if row["installed"] is False]
    if missing:
        print()
        for row in missing:
            print(f"{row['name']}: missing {', '.join(row['missing'])}; run `{row['install']}`")  # type: ignore[arg-type]
    return 0
