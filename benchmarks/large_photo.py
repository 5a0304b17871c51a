"""Time and peak memory of each preset on one large photo (12 MP), each in a fresh process.

The photo is a facemask-voc image enlarged to 4000 x 3000 (the size of a phone photo), so the figures
say what a worker needs per image on camera originals, which the evaluation sets (<= 1625 px) do not
show. Peak memory is the process's maximum resident set size, models included; time is one
``detect`` call after the models are loaded.

Usage::

    python benchmarks/large_photo.py [--data ../shared/data] [--presets default,balanced,thorough]
"""

from __future__ import annotations

import json
import subprocess
import sys

from catalogue import PRESETS, REPO, benchmark_parser

SIZE = (4000, 3000)
CHILD = """
import json, resource, sys, time
import cv2
from faceveil import detectors
from faceveil.io.image import read_picture
rgb = cv2.resize(read_picture(sys.argv[1]).rgb8(), (int(sys.argv[3]), int(sys.argv[4])))
detector = detectors.create(sys.argv[2])
started = time.perf_counter()
faces = detector.detect(rgb)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"faces": len(faces), "seconds": round(seconds, 1), "peak_mb": round(peak)}))
"""


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args()
    photo = min((args.data / "facemask-voc" / "images").iterdir())
    print(f"{photo.name} enlarged to {SIZE[0]} x {SIZE[1]}")
    print(f"{'preset':>10}  {'faces':>5}  {'seconds':>7}  {'peak MB':>7}")
    for name in args.presets.split(","):
        command = [sys.executable, "-c", CHILD, str(photo), name, str(SIZE[0]), str(SIZE[1])]
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:>10}  {row['faces']:>5}  {row['seconds']:>7}  {row['peak_mb']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
