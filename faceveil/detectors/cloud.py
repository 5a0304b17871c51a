"""Helpers shared by the cloud detectors: the explicit opt-in, and encoding an image under a byte limit.

Sending pictures of people to a third-party service is never implicit: a cloud detector refuses to
start unless ``FACEVEIL_ALLOW_CLOUD=1`` is set (the CLI's ``--allow-cloud`` sets it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from faceveil.errors import InputError, UsageError

ALLOW_ENV = "FACEVEIL_ALLOW_CLOUD"
_TRUE = frozenset({"1", "true", "yes", "on"})
JPEG_MAX_SIDE = 65_500
"""The JPEG format stores each side in 16 bits; larger images are shrunk before encoding."""
QUALITIES = (90, 80, 70)
"""JPEG qualities tried at full size before the image is shrunk (lower quality loses fewer small faces)."""


def cloud_allowed() -> bool:
    """Whether the user has enabled sending images to cloud services."""
    return os.environ.get(ALLOW_ENV, "").strip().lower() in _TRUE


def require_cloud_allowed(service: str) -> None:
    """Raise UsageError unless sending images to ``service`` was enabled explicitly."""
    if not cloud_allowed():
        raise UsageError(
            f"sending images to {service} must be enabled explicitly: pass --allow-cloud or set {ALLOW_ENV}=1"
        )


def as_rgb(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as a C-contiguous H x W x 3 uint8 array (grey images are expanded)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected an H x W x 3 uint8 RGB image, got shape {rgb.shape} and {rgb.dtype}")
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class Encoded:
    """A JPEG made to be sent, and how its pixels map back to the original image."""

    data: bytes
    width: int
    """Width of the encoded image in pixels."""
    height: int
    original_width: int
    original_height: int

    @property
    def scale_x(self) -> float:
        """Multiply an x in the encoded image's pixels by this to get the original image's pixels."""
        return self.original_width / self.width

    @property
    def scale_y(self) -> float:
        return self.original_height / self.height

    @property
    def downscaled(self) -> bool:
        return (self.width, self.height) != (self.original_width, self.original_height)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InputError(f"cannot encode a {rgb.shape[1]}x{rgb.shape[0]} image as JPEG")
    return buf.tobytes()


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(rgb: np.ndarray, max_bytes: int, qualities: tuple[int, ...] = QUALITIES) -> Encoded:
    """Encode ``rgb`` as a JPEG of at most ``max_bytes`` (no metadata: the pixels as displayed).

    The qualities in ``qualities`` are tried in turn at full size (skipping ahead when the bytes are far
    over); when none fits, the image is shrunk (area interpolation) by the factor the byte count
    suggests and encoded at the last quality, until it fits. A larger image at a lower quality keeps
    more small faces than a smaller one at a higher quality. Boxes found on the result map back through
    ``Encoded.scale_x`` / ``scale_y``.
    """
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    scale = min(1.0, JPEG_MAX_SIDE / max(h, w))
    tries = tuple(qualities)
    for _ in range(32):
        img = rgb if scale == 1.0 else _resize(rgb, scale)
        size, i = 0, 0
        while i < len(tries):
            data = _jpeg(img, tries[i])
            size = len(data)
            if size <= max_bytes:
                return Encoded(data, img.shape[1], img.shape[0], w, h)
            # far over: no middle quality will do, go straight to the last (its size sets the shrink)
            i = len(tries) - 1 if size > 2.5 * max_bytes and i < len(tries) - 1 else i + 1
        if max(img.shape[:2]) <= 16:
            break
        # bytes grow about with the pixel count: shrink the sides by sqrt(ratio), with some headroom
        scale *= min(0.9, 0.95 * (max_bytes / size) ** 0.5)
        tries = tries[-1:]
    raise InputError(f"cannot encode the {w}x{h} image as a JPEG of at most {max_bytes} bytes")
