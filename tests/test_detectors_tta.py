"""Test-time augmentation in detector specs (``yunet@flip,2x``) and the --preset / --tta options."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faceveil import detectors
from faceveil.cli import main
from faceveil.detectors.base import Member, parse_spec, with_augmentations
from faceveil.detectors.fusion import FusedDetector
from faceveil.detectors.tta import _spans
from faceveil.errors import UsageError
from faceveil.eval.metrics import iou_matrix


def _tiny_face(astronaut: np.ndarray, scale: float = 0.08) -> np.ndarray:
    """The astronaut shrunk until her face is about 7 px tall, on a grey canvas."""
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 300, 3), 128, np.uint8)
    canvas[100 : 100 + small.shape[0], 100 : 100 + small.shape[1]] = small
    return canvas


def test_spec_grammar() -> None:
    assert parse_spec("yunet@flip,2x+centerface") == [
        Member("yunet", ("flip", "2x")),
        Member("centerface", ()),
    ]
    assert parse_spec(" yunet @ FLIP ") == [Member("yunet", ("flip",))]
    assert with_augmentations("yunet+centerface@flip", "2x") == "yunet@2x+centerface@flip"
    assert with_augmentations("default", None) == "default"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("yunet@", "'@' must be followed by"),
        ("yunet@5x", "unknown augmentation '5x'"),
        ("yunet@1x", "unknown augmentation '1x'"),
        ("yunet@rotate", "unknown augmentation 'rotate'"),
        ("nope@flip", "unknown detector"),
        ("yunet+", "unknown detector"),
    ],
)
def test_bad_specs_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        detectors.create(spec)


def test_upscaled_tiles_find_a_face_the_plain_run_misses(astronaut: np.ndarray) -> None:
    image = _tiny_face(astronaut)
    assert detectors.create("yunet").detect(image) == []
    found = detectors.create("yunet@2x").detect(image)
    assert len(found) == 1
    x, y, _, h = found[0].bbox
    assert 100 <= x < 140 and 100 <= y < 120 and 4 <= h <= 12  # in the original image's pixels


@pytest.mark.parametrize("length", [1000, 1024, 1025, 1400, 2048, 2100, 3072, 4000, 9999])
def test_tiles_cover_the_axis_once_each_with_the_overlap_and_little_more(length: int) -> None:
    tile, overlap = 1024, 96
    spans = _spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(0 < end - start <= tile for start, end, _ in spans)
    assert len({end - start for start, end, _ in spans}) == 1  # one tile size
    for (_, end, (_, hi)), (start, _, (lo, _)) in itertools.pairwise(spans):
        assert overlap - 1 <= end - start <= overlap + 1
        assert hi == lo and start <= lo <= end  # cores meet inside the overlap: each centre owned once
    assert spans[0][2][0] == float("-inf") and spans[-1][2][1] == float("inf")
    seen = sum(end - start for start, end, _ in spans)
    assert seen <= length + len(spans) * (overlap + 1)


def test_flip_maps_boxes_back_and_fuses_with_the_plain_run(astronaut: np.ndarray) -> None:
    plain = detectors.create("yunet").detect(astronaut)
    mirrored = detectors.Mirrored(detectors.create("yunet")).detect(astronaut)
    assert len(plain) == len(mirrored) == 1
    assert iou_matrix(np.array([plain[0].bbox]), np.array([mirrored[0].bbox]))[0, 0] > 0.7
    both = detectors.create("yunet@flip")
    assert isinstance(both, FusedDetector) and both.name == "yunet@flip"
    assert len(both.detect(astronaut)) == 1  # the two runs' boxes become one face, not two


def test_cli_tta_and_preset(
    tmp_path: Path, astronaut: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_tiny_face(astronaut)).save(src / "tiny.png")
    assert main(["detect", str(src), "-o", str(tmp_path / "plain"), "--detector", "yunet", "-q"]) == 0
    assert (
        main(["detect", str(src), "-o", str(tmp_path / "tta"), "--detector", "yunet", "--tta", "2x", "-q"])
        == 0
    )

    def faces(out: str) -> list[dict]:
        lines = (tmp_path / out / "faces.jsonl").read_text().splitlines()
        return [f for line in lines for f in json.loads(line).get("faces", [])]

    assert faces("plain") == []
    assert len(faces("tta")) == 1
    assert main(["detect", str(src), "-o", str(tmp_path / "bad"), "--tta", "sideways", "-q"]) == 2
    assert "unknown augmentation 'sideways'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(src), "-o", str(tmp_path / "x"), "--preset", "thorough", "--detector", "yunet"])
    assert exc.value.code == 2
