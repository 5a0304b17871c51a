"""Core benchmark: protection at default settings on the shared sets, and speed against deface.

Runs the real CLI (``faceveil run``) and scores its ``faces.jsonl`` against ground truth with the contract's
``protected`` figure, then times faceveil and the reference tool (deface 1.5.0) back to back on
wider-val-parade. Usage::

    python benchmarks/core.py [--data ../shared/data] [--rounds 2] [--skip-speed] [--json results.json]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catalogue import REPO, benchmark_parser

from faceveil.eval.datasets import load_dataset
from faceveil.eval.metrics import ProtectionTally
from faceveil.types import HiddenFace

SETS = {
    "wider-val-parade (hard)": ("wider-val-parade", "images", "hard"),
    "wider-val-parade (medium)": ("wider-val-parade", "images", "medium"),
    "wider-val-parade (easy)": ("wider-val-parade", "images", "easy"),
    "facemask-voc": ("facemask-voc", "images", None),
    "dlib-faces-coco": ("dlib-faces-coco", "images", None),
}


def faceveil_run(images: Path, out: Path, extra: list[str]) -> float:
    """Run the CLI; returns wall-clock seconds including start-up."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "faceveil", "run", str(images), "-o", str(out), "-q", *extra], check=True
    )
    return time.perf_counter() - start


def score(root: Path, difficulty: str | None, out: Path) -> ProtectionTally:
    """``protected`` and precision of the regions recorded in ``out/faces.jsonl``."""
    dataset = load_dataset(root, difficulty)
    records = {}
    for line in (out / "faces.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        records[rec["path"]] = rec
    tally = ProtectionTally()
    for gt in dataset.images:
        rel = gt.path.relative_to(root / "images").as_posix()
        rec = records[rel]
        if rec["status"] != "ok":
            raise SystemExit(f"{rel}: {rec['status']}: {rec.get('error')}")
        hidden = [HiddenFace.from_json(f) for f in rec["faces"]]
        tally.add(gt.boxes, gt.ignore, hidden, rec["width"], rec["height"])
    return tally


def deface_seconds(folder: Path) -> float:
    """Seconds the reference tool reports for ``folder`` (its own timing, one process)."""
    tool = REPO.parent / "shared" / "tools" / "deface-reference"
    result = subprocess.run([str(tool), str(folder)], check=True, capture_output=True, text=True)
    match = re.search(r"(\d+) files in ([\d.]+) s", result.stdout.strip().splitlines()[-1])
    if not match:
        raise SystemExit(f"unexpected deface-reference output: {result.stdout!r}")
    return float(match.group(2))


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="speed rounds (faceveil and deface alternate)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="extra arguments for faceveil run (after --)")
    args = parser.parse_args()
    results: dict = {"protection": {}, "speed": {}}
    with tempfile.TemporaryDirectory() as tmp:
        outs: dict[str, Path] = {}
        print("| set | faces | protected | precision | <16 px | 16-32 | 32-64 | >64 px |")
        print("|---|---|---|---|---|---|---|---|")
        for label, (folder, images, difficulty) in SETS.items():
            root = args.data / folder
            out = outs.get(folder)
            if out is None:
                out = outs[folder] = Path(tmp) / folder
                faceveil_run(root / images, out, args.extra)
            tally = score(root, difficulty, out)
            sizes = " | ".join(
                f"{ok / n:.3f} ({n})" if n else "-" for n, ok in (tally.by_size[k] for k in tally.by_size)
            )
            print(
                f"| {label} | {tally.faces} | {tally.protected_share:.3f} | {tally.precision:.3f} | {sizes} |"
            )
            results["protection"][label] = {
                "faces": tally.faces,
                "protected": tally.protected_share,
                "precision": tally.precision,
                "by_size": {k: {"faces": n, "protected": ok} for k, (n, ok) in tally.by_size.items()},
            }
        if not args.skip_speed:
            images = args.data / "wider-val-parade" / "images" / "0--Parade"
            count = len(list(images.glob("*.jpg")))
            ours, theirs = [], []
            for i in range(args.rounds):
                theirs.append(deface_seconds(images))
                ours.append(faceveil_run(images, Path(tmp) / f"speed{i}", args.extra))
            best_ours, best_theirs = min(ours), min(theirs)
            results["speed"] = {
                "images": count,
                "faceveil_seconds": ours,
                "deface_seconds": theirs,
                "faceveil_images_per_s": count / best_ours,
                "deface_images_per_s": count / best_theirs,
                "ratio": best_theirs / best_ours,
            }
            print(f"\nspeed on {count} wider-val-parade images (best of {args.rounds}, start-up included):")
            print(f"  faceveil {best_ours:.2f} s ({count / best_ours:.1f} images/s), runs: {ours}")
            print(f"  deface   {best_theirs:.2f} s ({count / best_theirs:.1f} images/s), runs: {theirs}")
            print(f"  ratio    {best_theirs / best_ours:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
