"""The detectors on a real face, box fusion, and the in-memory Python API."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

import faceveil
from faceveil import detectors
from faceveil.detectors.fusion import VOTE_FLOOR, FusedDetector, fuse_faces, vote_faces
from faceveil.errors import UsageError
from faceveil.eval.metrics import iou_matrix
from faceveil.methods.regions import union_mask
from faceveil.types import Face, HiddenFace

ASTRONAUT_FACE = (178.0, 58.0, 92.0, 119.0)
"""The astronaut's face, x 178-270, y 58-177 (x, y, w, h)."""


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(iou_matrix(np.asarray([a], np.float64), np.asarray([b], np.float64))[0, 0])


def matches(faces: list[Face], box: tuple[float, ...], min_iou: float = 0.5) -> list[Face]:
    return [f for f in faces if iou(f.bbox, box) >= min_iou]


@pytest.fixture(scope="module")
def yunet() -> detectors.Detector:
    return detectors.create("yunet", threads=1)


@pytest.fixture(scope="module")
def centerface() -> detectors.Detector:
    return detectors.create("centerface", threads=1)


@pytest.fixture(scope="module")
def default() -> detectors.Detector:
    return detectors.create("default", threads=1)


# --- single detectors on a real face -------------------------------------------------------------


@pytest.mark.parametrize("name", ["yunet", "centerface", "default"])
def test_finds_the_astronaut(name: str, request: pytest.FixtureRequest, astronaut: np.ndarray) -> None:
    detector = request.getfixturevalue(name)
    faces = detector.detect(astronaut)
    assert len(faces) == 1, faces
    face = faces[0]
    x, y, w, h = face.bbox
    assert iou(face.bbox, ASTRONAUT_FACE) > 0.7
    assert abs(x - 178) < 12 and abs(y - 58) < 12 and abs(x + w - 270) < 12 and abs(y + h - 177) < 12
    assert 0.5 < face.score <= 1.0
    assert face.landmarks is not None and len(face.landmarks) == 5
    for lx, ly in face.landmarks:  # eyes, nose, mouth corners: inside the face box
        assert x <= lx <= x + w and y <= ly <= y + h
    assert set(face.detector.split("+")) <= {"yunet", "centerface"}


def test_threshold_is_honoured(yunet: detectors.Detector, astronaut: np.ndarray) -> None:
    assert yunet.detect(astronaut, 0.999) == []
    assert yunet.detect(np.zeros((240, 320, 3), np.uint8)) == []


def transformed_box(box: tuple[float, ...], how: str, size: int) -> tuple[float, ...]:
    """Where ``box`` lands in a size x size image after ``how``."""
    x, y, w, h = box
    return {
        "fliplr": (size - x - w, y, w, h),
        "flipud": (x, size - y - h, w, h),
        "rot90": (y, size - x - w, h, w),  # np.rot90: counter-clockwise
        "rot180": (size - x - w, size - y - h, w, h),
        "rot270": (size - y - h, x, h, w),
    }[how]


@pytest.mark.parametrize("how", ["fliplr", "rot90", "rot180", "rot270"])
def test_default_detector_on_turned_copies(
    how: str, default: detectors.Detector, astronaut: np.ndarray
) -> None:
    turned = {
        "fliplr": astronaut[:, ::-1],
        "rot90": np.rot90(astronaut),
        "rot180": np.rot90(astronaut, 2),
        "rot270": np.rot90(astronaut, 3),
    }[how]
    faces = default.detect(np.ascontiguousarray(turned))
    assert matches(faces, transformed_box(ASTRONAUT_FACE, how, 512), 0.5), (how, faces)


def test_default_detector_on_a_slanted_copy(default: detectors.Detector, astronaut: np.ndarray) -> None:
    turn = cv2.getRotationMatrix2D((256.0, 256.0), 20, 1.0)
    slanted = cv2.warpAffine(astronaut, turn, (512, 512))
    centre = turn @ np.array([224.0, 117.5, 1.0])
    faces = default.detect(slanted)
    assert any(
        f.bbox[0] < centre[0] < f.bbox[0] + f.bbox[2] and f.bbox[1] < centre[1] < f.bbox[1] + f.bbox[3]
        for f in faces
    ), faces


def test_create_and_registry() -> None:
    assert {"default", "yunet", "centerface"} <= set(detectors.registered())
    fused = detectors.create("yunet+centerface", threads=1)
    assert isinstance(fused, FusedDetector) and [m.name for m in fused.members] == ["yunet", "centerface"]
    for bad in ("nonesuch", "yunet+nonesuch", "", "+"):
        with pytest.raises(UsageError, match="unknown detector"):
            detectors.create(bad)


# --- fusion --------------------------------------------------------------------------------------


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_overlapping_boxes_from_two_detectors_become_one() -> None:
    a = Face((100.0, 100.0, 50.0, 60.0), 0.9, "yunet", ((110.0, 120.0),) * 5)
    b = Face((106.0, 104.0, 50.0, 60.0), 0.6, "centerface", ((111.0, 121.0),) * 5)
    fused = fuse_faces([b, a])
    assert len(fused) == 1
    face = fused[0]
    assert face.score == 0.9
    assert face.detector == "yunet+centerface"
    assert face.landmarks == a.landmarks
    # score-weighted: between the two, nearer the surer one
    assert face.bbox == pytest.approx((100 + 6 * 0.6 / 1.5, 100 + 4 * 0.6 / 1.5, 50.0, 60.0))


def test_disjoint_boxes_stay_apart() -> None:
    a = Face((0.0, 0.0, 40.0, 40.0), 0.8, "yunet")
    b = Face((200.0, 0.0, 40.0, 40.0), 0.7, "centerface")
    c = Face((30.0, 30.0, 40.0, 40.0), 0.5, "centerface")  # touches a, IoU ~0.06: a different face
    fused = fuse_faces([a, b, c])
    assert sorted(f.bbox for f in fused) == sorted([a.bbox, b.bbox, c.bbox])
    assert {f.detector for f in fused} == {"yunet", "centerface"}


def test_fusion_of_many_and_of_few() -> None:
    assert fuse_faces([]) == []
    one = Face((1.0, 2.0, 3.0, 4.0), 0.5, "x")
    assert fuse_faces([one]) == [one]
    same_place = [Face((10.0 + i, 10.0, 50.0, 50.0), 0.5 + i / 100, f"d{i % 2}") for i in range(5)]
    fused = fuse_faces(same_place)
    assert len(fused) == 1 and fused[0].detector in ("d0+d1", "d1+d0")


class Fixed:
    """A stand-in detector returning set faces (records the threshold it was given)."""

    def __init__(self, name: str, faces: list[Face]) -> None:
        self.name = name
        self.faces = faces
        self.thresholds: list[float | None] = []

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        self.thresholds.append(threshold)
        return list(self.faces)


def test_fused_detector_merges_its_members() -> None:
    first = Fixed("a", [Face((10.0, 10.0, 40.0, 40.0), 0.9, "a"), Face((300.0, 10.0, 40.0, 40.0), 0.8, "a")])
    second = Fixed("b", [Face((12.0, 11.0, 40.0, 40.0), 0.7, "b")])
    fused = FusedDetector([first, second])
    assert fused.name == "a+b"
    faces = fused.detect(np.zeros((100, 400, 3), np.uint8), 0.25)
    assert len(faces) == 2
    assert sorted(f.detector for f in faces) == ["a", "a+b"]
    assert first.thresholds == [0.25] and second.thresholds == [0.25]


def test_voting_scores_agreement_and_drops_lone_finds() -> None:
    a1 = Face((10.0, 10.0, 40.0, 40.0), 0.6, "a")
    a1_again = Face((11.0, 10.0, 40.0, 40.0), 0.3, "a")  # a second box of the same run counts once
    b1 = Face((12.0, 11.0, 40.0, 40.0), 0.5, "b")
    lone = Face((300.0, 10.0, 40.0, 40.0), 0.9, "c")
    kept = vote_faces([[a1, a1_again], [b1], [lone]], 0.3, 0.35)
    assert len(kept) == 1
    face = kept[0]
    assert face.score == pytest.approx((0.6 + 0.5) / 3)
    assert face.detector == "a+b"
    assert 10.0 < face.bbox[0] < 12.0
    everything = vote_faces([[a1, a1_again], [b1], [lone]], 0.3, 0.0)
    assert sorted(round(f.score, 4) for f in everything) == [0.3, round(1.1 / 3, 4)]
    assert vote_faces([[], []], 0.3, 0.0) == []


def test_voting_detector_asks_members_for_everything_and_applies_its_threshold() -> None:
    first = Fixed("a", [Face((10.0, 10.0, 40.0, 40.0), 0.9, "a"), Face((300.0, 10.0, 40.0, 40.0), 0.8, "a")])
    second = Fixed("b", [Face((12.0, 11.0, 40.0, 40.0), 0.7, "b")])
    voting = FusedDetector([first, second], vote=0.5)
    image = np.zeros((100, 400, 3), np.uint8)
    assert [f.detector for f in voting.detect(image)] == ["a+b"]  # 0.8 agreement; the lone face 0.4
    assert sorted(f.detector for f in voting.detect(image, 0.4)) == ["a", "a+b"]
    assert first.thresholds == [VOTE_FLOOR, VOTE_FLOOR] and second.thresholds == [VOTE_FLOOR, VOTE_FLOOR]


def test_thorough_preset_votes_over_seven_runs() -> None:
    thorough = detectors.create("thorough")
    assert isinstance(thorough, FusedDetector)
    assert len(thorough.members) == 7 and thorough.vote == thorough.threshold == 0.23
    full_size_centerface = thorough.members[3]
    assert full_size_centerface.name == "centerface" and full_size_centerface.max_side == 2048


# --- the Python API ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anonymizer() -> faceveil.Anonymizer:
    return faceveil.Anonymizer(threads=1)


def face_changed(before: np.ndarray, after: np.ndarray, hidden: list[HiddenFace]) -> None:
    """The astronaut's face was found, its pixels changed, and the rest of the image was not."""
    assert len(hidden) == 1 and iou(hidden[0].face.bbox, ASTRONAUT_FACE) > 0.7
    mask = union_mask([h.region for h in hidden], before.shape[1], before.shape[0]) > 0
    diff = np.abs(before.astype(np.int32) - after.astype(np.int32))
    diff = diff if diff.ndim == 2 else diff[..., :3].max(axis=2)
    assert (diff[mask] > 0).mean() > 0.9 and diff[mask].mean() > 10
    assert diff[400:, :].max() == 0 and diff[:, :100].max() == 0  # far from the face


def test_anonymize_numpy_returns_numpy(anonymizer: faceveil.Anonymizer, astronaut: np.ndarray) -> None:
    before = astronaut.copy()
    out, hidden = anonymizer.anonymize(astronaut)
    assert isinstance(out, np.ndarray) and out.shape == astronaut.shape and out.dtype == np.uint8
    assert np.array_equal(astronaut, before)  # the input is not modified
    face_changed(astronaut, out, hidden)
    assert hidden[0].region.shape == "ellipse" and hidden[0].source == "detector"
    assert anonymizer.detect(out) == []  # nothing left to find


def test_anonymize_pil_returns_pil(astronaut: np.ndarray) -> None:
    image = Image.fromarray(astronaut)
    out = faceveil.anonymize(image)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == image.size
    assert np.array_equal(np.asarray(image), astronaut)
    out_pixels = np.asarray(out)
    diff = np.abs(out_pixels.astype(int) - astronaut.astype(int)).max(axis=2)
    assert diff[70:170, 190:260].mean() > 10  # the face
    assert diff[400:, :].max() == 0
    assert faceveil.Anonymizer(threads=1).detect(out_pixels) == []


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_anonymize_pil_modes(mode: str, anonymizer: faceveil.Anonymizer, astronaut: np.ndarray) -> None:
    image = Image.fromarray(astronaut).convert(mode)
    out, hidden = anonymizer.anonymize(image)
    assert isinstance(out, Image.Image) and out.size == image.size
    assert out.mode == {"P": "RGB"}.get(mode, mode)
    before = np.asarray(image.convert(out.mode))
    face_changed(before, np.asarray(out), hidden)
    if mode == "RGBA":
        assert np.array_equal(np.asarray(out)[..., 3], np.asarray(image)[..., 3])


def test_anonymize_uint16_and_grey_arrays(anonymizer: faceveil.Anonymizer, astronaut: np.ndarray) -> None:
    deep = astronaut.astype(np.uint16) * 257
    out, hidden = anonymizer.anonymize(deep)
    assert out.dtype == np.uint16
    face_changed(deep, out, hidden)
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    out, hidden = anonymizer.anonymize(grey)
    assert out.shape == grey.shape
    face_changed(grey, out, hidden)


def test_api_refuses_bad_arguments(anonymizer: faceveil.Anonymizer) -> None:
    with pytest.raises(TypeError):
        anonymizer.anonymize([[0, 0, 0]])
    with pytest.raises(ValueError, match="unsupported"):
        anonymizer.anonymize(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        anonymizer.anonymize(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(UsageError):
        faceveil.Anonymizer(shape="circle")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        faceveil.Anonymizer(margin=-1)
    with pytest.raises(UsageError):
        faceveil.Anonymizer(threshold=1.5)
    with pytest.raises(UsageError):
        faceveil.Anonymizer(method="smudge")
