"""Detector-agnostic value types shared by detectors, methods, the journal and the records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

BBox = tuple[float, float, float, float]
"""A box as ``(x, y, width, height)`` in pixels of the displayed image, origin top-left."""

Shape = Literal["box", "ellipse", "polygon"]
Source = Literal["detector", "review", "tracker"]


@dataclass(frozen=True, slots=True)
class Face:
    """One detection: where a face is, how sure the detector is, and who found it."""

    bbox: BBox
    score: float
    detector: str
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> float:
        return max(self.bbox[2], 0.0) * max(self.bbox[3], 0.0)

    def to_json(self) -> dict[str, Any]:
        """The contract's face object without ``region`` (what ``faceveil detect`` writes)."""
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "detector": self.detector,
            "landmarks": None
            if self.landmarks is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Face:
        lms = data.get("landmarks")
        return cls(
            bbox=tuple(float(v) for v in data["bbox"]),  # type: ignore[arg-type]
            score=float(data["score"]),
            detector=str(data["detector"]),
            landmarks=None if lms is None else tuple((float(x), float(y)) for x, y in lms),
        )


@dataclass(frozen=True, slots=True)
class Region:
    """The area actually obfuscated for one face; coverage is computed from it."""

    shape: Shape
    bbox: BBox
    points: tuple[tuple[float, float], ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": self.shape, "bbox": [round(float(v), 2) for v in self.bbox]}
        if self.shape == "polygon":
            out["points"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.points or ()]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Region:
        pts = data.get("points")
        return cls(
            shape=data["shape"],
            bbox=tuple(float(v) for v in data["bbox"]),  # type: ignore[arg-type]
            points=None if pts is None else tuple((float(x), float(y)) for x, y in pts),
        )


@dataclass(frozen=True, slots=True)
class HiddenFace:
    """A face together with the region that hid it and where the decision came from."""

    face: Face
    region: Region
    source: Source = "detector"

    def to_json(self) -> dict[str, Any]:
        out = self.face.to_json()
        out["region"] = self.region.to_json()
        out["source"] = self.source
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HiddenFace:
        return cls(Face.from_json(data), Region.from_json(data["region"]), data.get("source", "detector"))


@dataclass(slots=True)
class Settings:
    """Everything that changes a run's output; its fingerprint decides what a resume may skip."""

    detector: str = "default"
    threshold: float | None = None
    method: str = "blur"
    shape: Shape = "ellipse"
    margin: float = 0.35
    quality: int | None = None
    strip_metadata: bool = True
    max_pixels: int = 178_956_970
    extra: dict[str, Any] = field(default_factory=dict)
