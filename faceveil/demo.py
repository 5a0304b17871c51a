"""``faceveil demo``: a before/after picture from a sample that ships with scikit-image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from faceveil.errors import MissingExtraError


def sample_image() -> np.ndarray:
    """scikit-image's ``astronaut`` (512x512 RGB, one face), read from the installed package."""
    try:
        import skimage.data
    except ImportError as exc:
        raise MissingExtraError("faceveil demo", "demo") from exc
    return skimage.data.astronaut()


def run_demo(output: Path, method: str = "blur", detector: str = "default") -> int:
    """Anonymize the sample, write original and result side by side, and say what was found."""
    from PIL import Image

    from faceveil.anonymizer import Anonymizer
    from faceveil.io.atomic import atomic_path

    original = sample_image()
    result, hidden = Anonymizer(detector=detector, method=method).anonymize(original)
    gap = np.full((original.shape[0], 16, 3), 255, np.uint8)
    side_by_side = np.concatenate([original, gap, result], axis=1)
    output = Path(output)
    with atomic_path(output) as tmp:
        Image.fromarray(side_by_side).save(
            tmp, format=Image.registered_extensions().get(output.suffix.lower(), "PNG")
        )
    for h in hidden:
        x, y, w, h_ = (round(v) for v in h.face.bbox)
        print(f"face at x={x} y={y} {w}x{h_} px, score {h.face.score:.2f} ({h.face.detector}) → {method}")
    print(f"wrote {output} (left: original, right: anonymized)", file=sys.stderr)
    return 0
