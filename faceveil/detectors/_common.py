"""Helpers shared by the plug-in detectors: finding weights without importing packages, scaling, NMS."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from faceveil.errors import InputError, MissingExtraError
from faceveil.types import Face


def package_dir(package: str, detector: str, pip: str) -> Path:
    """The installed folder of ``package``, found without running its ``__init__``.

    Raises MissingExtraError (naming ``pip install <pip>``) when the package is not installed.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the {detector!r} detector (package {package!r})", package, pip)
    return Path(next(iter(spec.submodule_search_locations)))


def weights_path(
    package: str, relative: str, detector: str, pip: str, override: str | Path | None = None
) -> Path:
    """``override`` when given (it must exist), else ``relative`` inside the installed ``package``."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise InputError(f"{detector} weights file {path} does not exist")
        return path
    path = package_dir(package, detector, pip) / relative
    if not path.is_file():
        raise InputError(f"{detector} weights file {path} is missing from the installed package {package!r}")
    return path


def import_module(module: str, detector: str, pip: str) -> ModuleType:
    """Import a runtime module (``dlib``), or raise MissingExtraError naming the pip install."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(f"the {detector!r} detector (module {module!r})", module, pip)
    return importlib.import_module(module)


def set_cv_threads(threads: int | None) -> None:
    """Limit OpenCV's own thread pool (process-wide) when the caller asks for a thread count."""
    if threads:
        cv2.setNumThreads(int(threads))


def fit(rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """``rgb`` shrunk so its longer side is at most ``max_side`` (never enlarged), and the scale used."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb, 1.0
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression over x, y, w, h ``boxes``, best score first."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    keep = cv2.dnn.NMSBoxes(
        np.asarray(boxes, np.float64).tolist(), np.asarray(scores, np.float64).tolist(), 0.0, iou
    )
    return np.asarray(keep, np.int64).reshape(-1)


def to_faces(
    boxes: np.ndarray,
    scores: np.ndarray,
    name: str,
    scale: float = 1.0,
    landmarks: np.ndarray | None = None,
) -> list[Face]:
    """Faces from x, y, w, h ``boxes`` found on an image shrunk by ``scale`` (landmarks: N, K, 2)."""
    faces = []
    for i in range(len(scores)):
        x, y, w, h = (float(v) / scale for v in boxes[i])
        marks = None
        if landmarks is not None:
            marks = tuple((float(px) / scale, float(py) / scale) for px, py in landmarks[i])
        score = min(1.0, max(0.0, float(scores[i])))
        faces.append(Face((x, y, w, h), score, name, marks))
    return faces


def check_image(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as a C-contiguous H x W x 3 uint8 array (grey images are expanded)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected an H x W x 3 uint8 RGB image, got shape {rgb.shape} and {rgb.dtype}")
    return np.ascontiguousarray(rgb)
