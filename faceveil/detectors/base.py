"""The detector interface and the registry that plug-ins join."""

from __future__ import annotations

import importlib.util
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


def create(name: str, threads: int | None = None) -> Detector:
    """Build the detector called ``name`` (``a+b`` fuses several)."""
    parts = [p.strip() for p in name.split("+") if p.strip()]
    unknown = [p for p in parts if p not in _REGISTRY]
    if not parts or unknown:
        known = ", ".join(sorted(_REGISTRY))
        raise UsageError(f"unknown detector {name!r}: choose from {known} (or join several with '+')")
    if len(parts) == 1:
        return _REGISTRY[parts[0]].factory(threads=threads)
    from faceveil.detectors.fusion import FusedDetector

    return FusedDetector([_REGISTRY[p].factory(threads=threads) for p in parts])
