"""How much of a preset's top-1 drop comes from animal-class images, and how much from the rest.

Anonymizes ``imagenet-sample`` with ``faceveil run`` (default: ``--preset balanced``), then makes two
copies of the output: one where the images of ImageNet's animal classes (class index < 398) are put
back as they were, so only the other classes' faces are hidden (what a perfect human-versus-animal
check could reach at best, since it would also spare any person in an animal photo), and one where
the other classes' images are put back. ``faceveil eval utility --anonymized`` measures all three.

Usage::

    python benchmarks/utility_split.py [--data ../shared/data] [--preset balanced] [--keep DIR]

About 2 minutes on 2 cores once the originals' scores are cached.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from catalogue import ANIMAL_CLASSES, benchmark_parser

VARIANTS = {
    "all hidden": None,
    "animal-class images restored": True,
    "other-class images restored": False,
}


def faceveil(*args: str | Path) -> None:
    """Run the faceveil CLI, failing loudly."""
    subprocess.run([sys.executable, "-m", "faceveil", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--keep", type=Path, default=None, help="keep the anonymized folders here")
    args = parser.parse_args()
    sample = args.data / "imagenet-sample"
    images, labels = sample / "images", sample / "labels.csv"
    with labels.open(newline="") as f:
        animal = {row["file"]: int(row["class_index"]) < ANIMAL_CLASSES for row in csv.DictReader(f)}
    work = args.keep or Path(tempfile.mkdtemp(prefix="utility-split-"))
    work.mkdir(parents=True, exist_ok=True)
    hidden = work / "hidden"
    faceveil("run", images, "-o", hidden, "--preset", args.preset, "-q")
    evaluate = ("eval", "utility", "--images", images, "--labels", labels, "-q")
    rows = []
    for i, (name, restore_animals) in enumerate(VARIANTS.items()):
        folder = hidden
        if restore_animals is not None:
            folder = work / f"variant{i}"
            shutil.copytree(hidden, folder, dirs_exist_ok=True)
            for file, is_animal in animal.items():
                if is_animal == restore_animals:
                    shutil.copyfile(images / file, folder / file)
        report = work / f"variant{i}.json"
        faceveil(*evaluate, "--anonymized", folder, "--json", report)
        top1 = json.loads(report.read_text())["top1"]
        rows.append((name, top1["drop"], top1["drop_ci95"]))
    print(f"{args.preset}: top-1 drop on {sample.name} (points, 95 % CI)")
    for name, drop, (lo, hi) in rows:
        print(f"  {name:<30} {100 * drop:4.1f} ({100 * lo:.1f}-{100 * hi:.1f})")
    if args.keep is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
