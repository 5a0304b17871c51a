"""Shared test fixtures: where the evaluation data lives, and small real images made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (real photos, videos and ground truth)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut: 512x512 RGB with one face at about x 178-270, y 58-177."""
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()
