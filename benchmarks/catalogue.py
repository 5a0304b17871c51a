"""The detectors the benchmark scripts measure: every offline one (cloud detectors would send the
photos away), and the presets; the options the one-detector benchmarks share; ImageNet's animal classes."""

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OFFLINE = ("haar", "ssd", "dlib-hog", "dlib-cnn", "mtcnn", "retinaface", "blazeface", "yunet", "centerface")
PRESETS = ("default", "balanced", "thorough")
ANIMAL_CLASSES = 398
"""ImageNet-1k class indices below this are animals (imagenet-sample's labels.csv ``class_index``)."""


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's option parser, its docstring as help, with --data (the shared evaluation data)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    return parser


def detector_args(doc: str, detector: str) -> argparse.Namespace:
    """The options of a one-detector benchmark: --data, --detector, --threads, --json."""
    parser = benchmark_parser(doc)
    parser.add_argument("--detector", default=detector)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()
