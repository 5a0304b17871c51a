"""The in-memory API: an ``Anonymizer`` that loads its models once, and a one-call helper."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from faceveil import detectors, methods
from faceveil.detectors.base import Detector
from faceveil.errors import UsageError
from faceveil.methods.regions import region_for
from faceveil.types import Face, HiddenFace, Settings, Shape

SHAPES = ("ellipse", "box")


class Anonymizer:
    """Finds and hides faces in images held in memory.

    >>> anon = Anonymizer(method="pixelate")
    >>> hidden_rgb, faces = anon.anonymize(rgb_array)
    """

    def __init__(
        self,
        detector: str | Detector = "default",
        method: str = "blur",
        shape: Shape = "ellipse",
        margin: float = 0.35,
        threshold: float | None = None,
        threads: int | None = None,
    ) -> None:
        if shape not in SHAPES:
            raise UsageError(f"unknown mask shape {shape!r}: choose ellipse or box")
        if margin < 0:
            raise UsageError(f"margin must be 0 or more, got {margin}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise UsageError(f"threshold must be between 0 and 1, got {threshold}")
        self.detector = detectors.create(detector, threads=threads) if isinstance(detector, str) else detector
        self.method = methods.create(method)
        self.shape: Shape = shape
        self.margin = margin
        self.threshold = threshold

    @classmethod
    def from_settings(cls, settings: Settings, threads: int | None = None) -> Anonymizer:
        """Build from a run's settings."""
        return cls(
            settings.detector, settings.method, settings.shape, settings.margin, settings.threshold, threads
        )

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image (HxWx3)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect() takes an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
        return self.detector.detect(rgb, self.threshold if threshold is None else threshold)

    def hide(self, pixels: np.ndarray, faces: list[Face]) -> list[HiddenFace]:
        """Obfuscate ``faces`` in ``pixels`` in place; returns each face with the region that hid it."""
        height, width = pixels.shape[:2]
        hidden = [HiddenFace(f, region_for(f, self.shape, self.margin, width, height)) for f in faces]
        self.method.apply(pixels, [h.region for h in hidden])
        return hidden

    def anonymize(self, image: Any) -> tuple[Any, list[HiddenFace]]:
        """A copy of ``image`` (numpy array or PIL image) with every face hidden, and the faces."""
        pixels, to_output = _as_array(image)
        faces = self.detect(_rgb8(pixels))
        out = pixels.copy()
        hidden = self.hide(out, faces)
        return to_output(out), hidden


def anonymize(image: Any, **options: Any) -> Any:
    """Hide every face in ``image`` with default (or given) settings; the Anonymizer is cached per options."""
    return _cached(tuple(sorted(options.items()))).anonymize(image)[0]


@lru_cache(maxsize=4)
def _cached(options: tuple[tuple[str, Any], ...]) -> Anonymizer:
    return Anonymizer(**dict(options))


def _as_array(image: Any) -> tuple[np.ndarray, Any]:
    """The pixels of ``image`` and a function turning the result back into the caller's type."""
    if isinstance(image, np.ndarray):
        return image, lambda a: a
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        mode = image.mode
        if mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGBA" if "A" in mode else "RGB")
        return np.array(image), lambda a: Image.fromarray(a)
    raise TypeError(f"anonymize() takes a numpy array or a PIL image, got {type(image).__name__}")


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """An RGB uint8 view of any supported pixel array, for the detectors."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {pixels.dtype}: use uint8 or uint16")
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return np.ascontiguousarray(pixels[..., :3])
    raise ValueError(f"unsupported image shape {pixels.shape}: use HxW, HxWx3 or HxWx4")
