"""The detector interface and the registry that plug-ins join."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from faceveil.errors import UsageError
from faceveil.types import Face


@runtime_checkable
class Detector(Protocol):
    """Finds faces in one RGB uint8 image; boxes are in that image's pixels."""

    name: str

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Return every face scoring at least ``threshold`` (the detector's default when None)."""
        ...


@dataclass(frozen=True)
class DetectorInfo:
    """What `faceveil models` shows about a detector and how to build one."""

    name: str
    factory: Callable[..., Detector]
    summary: str
    weights: str
    licence: str
    extra: str | None = None
    requires: tuple[str, ...] | None = None
    """What must be installed: ``module`` or ``module:relative/file`` (None: not declared)."""
    preset: bool = False
    """A named combination offered by ``--preset`` (e.g. ``thorough``)."""

    def missing(self) -> list[str]:
        """The entries of ``requires`` not installed (checked without importing or loading anything)."""
        return [req for req in self.requires or () if not requirement_present(req)]

    def available(self) -> bool | None:
        """Whether everything it needs is installed (None when its requirements are not declared)."""
        if self.requires is None:
            return None
        return not self.missing()


def requirement_present(requirement: str) -> bool:
    """Whether ``module`` (or the file ``module:relative/path`` inside it) is installed, without importing it.

    A dotted name imports its parents (``cv2.data`` imports ``cv2``); top-level names import nothing.
    """
    module, _, relative = requirement.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if not relative:
        return True
    if not spec.submodule_search_locations:
        return False
    return any((Path(loc) / relative).is_file() for loc in spec.submodule_search_locations)


_REGISTRY: dict[str, DetectorInfo] = {}


def register(info: DetectorInfo) -> None:
    """Make a detector available by name to the CLI, the API and presets."""
    _REGISTRY[info.name] = info


def registered() -> dict[str, DetectorInfo]:
    """All known detectors by name."""
    return dict(_REGISTRY)


AUGMENTATIONS_HELP = "flip (mirrored copy) or an upscale factor such as 2x (enlarged tiles)"


@dataclass(frozen=True)
class Member:
    """One part of a detector spec: a registered name and its test-time augmentations."""

    name: str
    augment: tuple[str, ...] = ()


def parse_spec(spec: str) -> list[Member]:
    """Split ``a@flip,2x+b`` into its members, checking every name and augmentation.

    The spec is what ``--detector`` takes: registered names joined with ``+`` to fuse them, each
    optionally followed by ``@`` and comma-separated augmentations (:data:`AUGMENTATIONS_HELP`).
    """
    members = []
    for part in spec.split("+"):
        name, _, augs = (s.strip() for s in part.partition("@"))
        if name not in _REGISTRY:
            known = ", ".join(sorted(_REGISTRY))
            raise UsageError(f"unknown detector {spec!r}: choose from {known} (or join several with '+')")
        tokens = tuple(t.strip().lower() for t in augs.split(",") if t.strip()) if augs else ()
        if "@" in part and not tokens:
            raise UsageError(f"detector {spec!r}: '@' must be followed by {AUGMENTATIONS_HELP}")
        for token in tokens:
            upscale_factor(token, spec)
        members.append(Member(name, tokens))
    return members


def upscale_factor(token: str, spec: str = "") -> float | None:
    """The factor of an upscale augmentation (``2x`` is 2.0), None for ``flip``; anything else is an error."""
    if token == "flip":
        return None
    try:
        factor = float(token[:-1]) if token.endswith("x") else math.nan
    except ValueError:
        factor = math.nan
    if not 1.0 < factor <= 4.0:
        where = f" in detector {spec!r}" if spec else ""
        raise UsageError(
            f"unknown augmentation {token!r}{where}: use {AUGMENTATIONS_HELP} (factors above 1, up to 4)"
        )
    return factor


def with_augmentations(spec: str, augment: str | None) -> str:
    """``spec`` with ``augment`` (e.g. ``flip,2x``) added to every member that names none of its own."""
    if not augment:
        return spec
    return "+".join(p if "@" in p else f"{p.strip()}@{augment}" for p in spec.split("+"))


def create(name: str, threads: int | None = None) -> Detector:
    """Build the detector ``name`` describes (:func:`parse_spec`: ``a+b`` fuses, ``a@flip,2x`` augments)."""
    members = parse_spec(name)
    built = [_build(m, threads) for m in members]
    if len(built) == 1:
        return built[0]
    from faceveil.detectors.fusion import FusedDetector

    return FusedDetector(built)


def _build(member: Member, threads: int | None) -> Detector:
    detector = _REGISTRY[member.name].factory(threads=threads)
    if not member.augment:
        return detector
    from faceveil.detectors.tta import augmented

    return augmented(detector, member.augment)
