"""Obfuscation methods and region geometry: what is hidden, how strongly, and what is left alone."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest

from faceveil import methods
from faceveil.errors import UsageError
from faceveil.methods.blur import Blur
from faceveil.methods.box import Box
from faceveil.methods.pixelate import Pixelate
from faceveil.methods.regions import clip_bbox, region_for, union_mask
from faceveil.types import Face, Region

RNG = np.random.default_rng(20240601)


# --- helpers -------------------------------------------------------------------------------------


def noise(h: int, w: int, channels: int | None = 3, dtype: type = np.uint8) -> np.ndarray:
    """Full-range white noise: every pixel differs from its neighbours, so any smoothing shows."""
    top = int(np.iinfo(dtype).max)
    shape = (h, w) if channels is None else (h, w, channels)
    return RNG.integers(0, top + 1, size=shape, dtype=np.int64).astype(dtype)


def region_mask(region: Region, width: int, height: int) -> np.ndarray:
    """Boolean mask of the pixels a region covers."""
    return union_mask([region], width, height) > 0


def reach(region: Region, width: int, height: int, feather: float) -> np.ndarray:
    """Every pixel a method may touch for ``region``: the region grown by its feather (+2 px), as a square."""
    grow = math.ceil(feather * max(region.bbox[2], region.bbox[3])) + 2
    mask = union_mask([region], width, height)
    return cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0


def laplacian_variance(pixels: np.ndarray, mask: np.ndarray) -> float:
    """High-frequency energy of the grey image inside ``mask``."""
    grey = (
        pixels
        if pixels.ndim == 2
        else cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2GRAY)
    )
    lap = cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F)
    return float(lap[mask].var())


def inner(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` shrunk by ``px`` pixels (away from the blended edge)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


# --- region geometry -----------------------------------------------------------------------------


def test_region_grows_by_margin_on_every_side() -> None:
    face = Face((100.0, 50.0, 40.0, 60.0), 0.9, "t")
    assert region_for(face, "ellipse", 0.25, 1000, 1000) == Region("ellipse", (90.0, 35.0, 60.0, 90.0))
    assert region_for(face, "box", 0.25, 1000, 1000) == Region("box", (90.0, 35.0, 60.0, 90.0))
    assert region_for(face, "box", 0.0, 1000, 1000).bbox == face.bbox


def test_box_region_is_clipped_to_the_image_but_ellipse_keeps_its_proportions() -> None:
    face = Face((5.0, 10.0, 40.0, 40.0), 0.9, "t")
    box = region_for(face, "box", 0.5, 50, 60)
    assert box.shape == "box"
    assert box.bbox == pytest.approx((0.0, 0.0, 50.0, 60.0))
    ellipse = region_for(face, "ellipse", 0.5, 50, 60)
    assert ellipse.bbox == pytest.approx((-15.0, -10.0, 80.0, 80.0))


def test_clip_bbox() -> None:
    assert clip_bbox((-10.0, -5.0, 30.0, 20.0), 100, 100) == (0.0, 0.0, 20.0, 15.0)
    assert clip_bbox((90.0, 95.0, 30.0, 20.0), 100, 100) == (90.0, 95.0, 10.0, 5.0)
    assert clip_bbox((10.0, 10.0, 5.0, 5.0), 100, 100) == (10.0, 10.0, 5.0, 5.0)
    assert clip_bbox((200.0, 10.0, 5.0, 5.0), 100, 100)[2] == 0.0  # entirely outside: empty


def test_ellipse_is_inscribed_in_its_bbox() -> None:
    region = Region("ellipse", (10.0, 20.0, 60.0, 40.0))
    mask = region_mask(region, 100, 100)
    rows, cols = np.nonzero(mask)
    # touches all four sides of the box, never leaves it
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (10, 69, 20, 59)
    assert mask.sum() == pytest.approx(math.pi * 30 * 20, rel=0.03)
    assert mask[40, 40]  # centre
    for y, x in ((20, 10), (20, 69), (59, 10), (59, 69)):  # box corners are outside the ellipse
        assert not mask[y, x]


def test_box_paint_and_union() -> None:
    a = Region("box", (10.0, 20.0, 30.0, 40.0))
    b = Region("box", (30.0, 50.0, 20.0, 20.0))
    mask = union_mask([a, b], 100, 100)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert mask[20:60, 10:40].all() and mask[50:70, 30:50].all()
    assert (mask > 0).sum() == 30 * 40 + 20 * 20 - 10 * 10


def test_regions_partly_outside_are_clipped_when_painted() -> None:
    mask = union_mask([Region("ellipse", (-30.0, -30.0, 80.0, 80.0))], 40, 40)
    assert mask[0, 0] and mask[20, 20] and not mask[39, 39]
    mask = union_mask([Region("box", (30.0, 30.0, 50.0, 50.0))], 40, 40)
    assert mask[30:, 30:].all() and (mask > 0).sum() == 100
    assert not union_mask([Region("box", (10.0, 10.0, 0.0, 5.0))], 40, 40).any()


def test_polygon_region() -> None:
    region = Region("polygon", (0.0, 0.0, 40.0, 40.0), ((0.0, 0.0), (40.0, 0.0), (0.0, 40.0)))
    mask = region_mask(region, 50, 50)
    assert mask[5, 5] and not mask[35, 35] and not mask[45, 45]
    assert mask.sum() == pytest.approx(800, rel=0.08)


# --- the methods ---------------------------------------------------------------------------------


def test_registry() -> None:
    assert {"blur", "pixelate", "box"} <= set(methods.registered())
    assert isinstance(methods.create("blur"), Blur)
    with pytest.raises(UsageError, match="unknown method"):
        methods.create("smudge")


def test_blur_destroys_detail_of_a_large_real_face(astronaut: np.ndarray) -> None:
    """The astronaut's face (about 92x119 px, grown by the default margin) loses its detail."""
    pixels = astronaut.copy()
    face = Face((178.0, 58.0, 92.0, 119.0), 0.9, "t")
    region = region_for(face, "ellipse", 0.35, 512, 512)
    Blur().apply(pixels, [region])
    mask = region_mask(region, 512, 512)
    before = laplacian_variance(astronaut, inner(mask, 2))
    after = laplacian_variance(pixels, inner(mask, 2))
    assert before > 100
    assert after < before / 50, (before, after)
    changed = np.any(pixels != astronaut, axis=2)
    assert changed[mask].mean() > 0.95
    outside = ~reach(region, 512, 512, Blur().feather)
    assert np.array_equal(pixels[outside], astronaut[outside])


def stripe_amplitude(pixels: np.ndarray, mask: np.ndarray, period: float) -> float:
    """Amplitude of vertical stripes of ``period`` pixels inside ``mask`` (a one-frequency Fourier fit)."""
    ys, xs = np.nonzero(mask)
    values = pixels[ys, xs].astype(np.float64)
    values -= values.mean()
    return float(2 * abs(np.mean(values * np.exp(-2j * np.pi * xs / period))))


@pytest.mark.parametrize("size", [48, 480])
def test_blur_strength_scales_with_face_size(size: int) -> None:
    """Stripes a quarter of the face wide would survive a fixed blur; a size-scaled one flattens them."""
    side = size * 2
    period = size / 4
    x = np.arange(side, dtype=np.float64)
    stripes = (128 + 100 * np.sin(2 * np.pi * x / period))[None, :].repeat(side, axis=0)
    pixels = np.rint(stripes).astype(np.uint8)
    original = pixels.copy()
    region = Region("box", (size / 2, size / 2, float(size), float(size)))
    Blur().apply(pixels, [region])
    core = inner(region_mask(region, side, side), 2)
    before = stripe_amplitude(original, core, period)
    after = stripe_amplitude(pixels, core, period)
    assert before == pytest.approx(100, rel=0.05)
    assert after < before / 10, (size, before, after)
    # a fixed 8 px blur (what a face-size-blind method might use) keeps most of the big face's stripes
    fixed = cv2.GaussianBlur(original, (0, 0), 8)
    assert (stripe_amplitude(fixed, core, period) > before / 2) == (size == 480)


def test_blur_feather_only_spreads_outward_and_stays_local() -> None:
    pixels = noise(300, 300)
    original = pixels.copy()
    region = Region("ellipse", (100.0, 80.0, 100.0, 140.0))
    Blur().apply(pixels, [region])
    mask = region_mask(region, 300, 300)
    changed = np.any(pixels != original, axis=2)
    assert changed[mask].mean() > 0.97
    outside = ~reach(region, 300, 300, 0.1)
    assert np.array_equal(pixels[outside], original[outside])
    # the feather does blend a ring just outside the region
    ring = reach(region, 300, 300, 0.1) & ~mask
    assert changed[ring].mean() > 0.3


@pytest.mark.parametrize("method", [Blur(), Pixelate(), Box()], ids=["blur", "pixelate", "box"])
def test_uint16_pixels_keep_depth(method: methods.Method) -> None:
    pixels = noise(200, 200, 3, np.uint16)
    original = pixels.copy()
    region = Region("ellipse", (50.0, 40.0, 100.0, 120.0))
    method.apply(pixels, [region])
    assert pixels.dtype == np.uint16
    mask = region_mask(region, 200, 200)
    assert np.any(pixels != original, axis=2)[mask].mean() > 0.95
    outside = ~reach(region, 200, 200, getattr(method, "feather", 0.0))
    assert np.array_equal(pixels[outside], original[outside])
    if not isinstance(method, Box):  # values stay 16-bit, not squashed to 8 bits
        assert pixels[mask].max() > 255 and np.any(pixels[mask] % 256 != 0)


@pytest.mark.parametrize("method", [Blur(), Pixelate(), Box()], ids=["blur", "pixelate", "box"])
def test_rgba_alpha_is_kept_bit_exact(method: methods.Method) -> None:
    pixels = noise(200, 200, 4)
    original = pixels.copy()
    region = Region("ellipse", (40.0, 50.0, 120.0, 100.0))
    method.apply(pixels, [region])
    assert np.array_equal(pixels[..., 3], original[..., 3])
    mask = region_mask(region, 200, 200)
    assert np.any(pixels[..., :3] != original[..., :3], axis=2)[mask].mean() > 0.95
    outside = ~reach(region, 200, 200, getattr(method, "feather", 0.0))
    assert np.array_equal(pixels[outside], original[outside])


@pytest.mark.parametrize("method", [Blur(), Pixelate(), Box()], ids=["blur", "pixelate", "box"])
def test_greyscale_pixels(method: methods.Method) -> None:
    pixels = noise(160, 220, None)
    original = pixels.copy()
    region = Region("box", (60.0, 30.0, 90.0, 100.0))
    method.apply(pixels, [region])
    assert pixels.shape == (160, 220)
    mask = region_mask(region, 220, 160)
    assert (pixels != original)[mask].mean() > 0.95
    outside = ~reach(region, 220, 160, getattr(method, "feather", 0.0))
    assert np.array_equal(pixels[outside], original[outside])


def test_box_fills_exactly_the_region() -> None:
    pixels = np.full((100, 100, 3), 200, np.uint8)
    region = Region("ellipse", (20.0, 10.0, 50.0, 70.0))
    Box().apply(pixels, [region])
    mask = region_mask(region, 100, 100)
    assert (pixels[mask] == 0).all()
    assert (pixels[~mask] == 200).all()


def run_lengths(row: np.ndarray) -> list[int]:
    """Lengths of runs of equal values along a row of pixels."""
    change = np.nonzero(np.any(row[1:] != row[:-1], axis=-1))[0]
    edges = [0, *(change + 1).tolist(), len(row)]
    return [b - a for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("size", [64, 256])
def test_pixelate_cells_scale_with_face_size(size: int) -> None:
    side = size + 40
    pixels = noise(side, side)
    region = Region("box", (20.0, 20.0, float(size), float(size)))
    Pixelate().apply(pixels, [region])
    row = pixels[20 + size // 2, 20 : 20 + size]
    runs = run_lengths(row)[1:-1]  # the first and last cells are cut by the region's edge
    assert len(runs) >= 5
    assert np.median(runs) == pytest.approx(size / 8, rel=0.15), runs
    column = pixels[20 : 20 + size, 20 + size // 2]
    assert np.median(run_lengths(column)[1:-1]) == pytest.approx(size / 8, rel=0.15)  # square cells


def test_overlapping_and_degenerate_regions() -> None:
    pixels = noise(120, 120)
    original = pixels.copy()
    regions = [
        Region("ellipse", (10.0, 10.0, 60.0, 60.0)),
        Region("ellipse", (40.0, 40.0, 60.0, 60.0)),
        Region("box", (5.0, 5.0, 0.0, 10.0)),
        Region("box", (500.0, 500.0, 10.0, 10.0)),
    ]
    Blur().apply(pixels, regions)
    mask = union_mask(regions, 120, 120) > 0
    assert np.any(pixels != original, axis=2)[mask].mean() > 0.95
    assert np.array_equal(pixels[110:, :20], original[110:, :20])


def test_region_at_image_edge() -> None:
    pixels = noise(100, 100)
    original = pixels.copy()
    region = Region("ellipse", (-40.0, -30.0, 100.0, 90.0))
    Blur().apply(pixels, [region])
    mask = region_mask(region, 100, 100)
    assert np.any(pixels != original, axis=2)[mask].mean() > 0.95
    outside = ~reach(region, 100, 100, 0.1)
    assert np.array_equal(pixels[outside], original[outside])
