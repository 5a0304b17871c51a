"""End to end through the real command line, on real photos: bad inputs, odd formats, the output
contract, unwritable output folders, and a run killed with SIGKILL and resumed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from faceveil.cli import main
from faceveil.methods.regions import paint_region, union_mask
from faceveil.types import Region

REPO = Path(__file__).resolve().parents[1]
PHOTO = "2008_002470.jpg"  # 500x332, six faces
FROG = "n01644373_tree_frog.JPEG"  # no face, has EXIF
CAN_OPENER = "n02951585_can_opener.JPEG"  # no face, EXIF orientation 6
OK_KEYS = ["path", "status", "kind", "width", "height", "sha256", "method", "written", "faces"]
FACE_KEYS = ["bbox", "score", "detector", "landmarks", "region", "source"]
ERROR_KEYS = ["path", "status", "kind", "error"]
GPS_IFD = 0x8825
MAKE = 0x010F
ORIENTATION = 0x0112


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    err: str
    seconds: float


def run_cli(*args: object) -> Result:
    """``faceveil ARGS`` in this process, with stderr captured."""
    err = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return Result(code, err.getvalue(), time.monotonic() - started)


def faceveil_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "faceveil", *(str(a) for a in args)]


def lines_of(out: Path) -> list[dict]:
    text = (out / "faces.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def by_path(out: Path) -> dict[str, dict]:
    return {line["path"]: line for line in lines_of(out)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(root: Path) -> dict[str, str]:
    """Every file below ``root`` (outside the state folder) and its hash."""
    return {
        p.relative_to(root).as_posix(): sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".faceveil" not in p.relative_to(root).parts
    }


def temp_files(out: Path) -> list[Path]:
    return sorted(out.rglob(".*.tmp*"))


def displayed(path: Path) -> np.ndarray:
    """RGB pixels as a viewer shows them (EXIF orientation applied)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(np.int32)


def regions_of(line: dict) -> list[Region]:
    return [Region.from_json(face["region"]) for face in line["faces"]]


def untouched_zone(regions: list[Region], width: int, height: int, extra: int) -> np.ndarray:
    """Pixels farther than the feather (0.1 x size) + ``extra`` px from every region."""
    mask = np.zeros((height, width), np.uint8)
    for region in regions:
        one = union_mask([region], width, height)
        grow = math.ceil(0.1 * max(region.bbox[2], region.bbox[3])) + extra
        mask |= cv2.dilate(one, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask == 0


def region_pixels(region: Region, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    paint_region(mask, region)
    return mask > 0


def check_jpeg_hidden(before: np.ndarray, after: np.ndarray, line: dict, noise: float = 1.0) -> None:
    """Re-encoded JPEG: every region clearly changed, everything away from the regions nearly identical.

    ``noise`` bounds the mean re-encoding change away from faces (larger when the stored pixels were
    turned, which moves the 8x8 block grid).
    """
    height, width = before.shape[:2]
    diff = np.abs(before - after).mean(axis=2)
    regions = regions_of(line)
    assert regions, line["path"]
    for region in regions:
        inside = diff[region_pixels(region, width, height)]
        assert inside.mean() > 5, (line["path"], region, inside.mean())
    outside = diff[untouched_zone(regions, width, height, extra=16)]
    assert outside.mean() < noise, (line["path"], outside.mean())
    assert np.percentile(outside, 99.9) < 12 * noise, line["path"]


def ground_truth(shared_data: Path) -> dict[str, list[list[float]]]:
    """dlib-faces-coco's face boxes by file name."""
    doc = json.loads((shared_data / "dlib-faces-coco" / "annotations.coco.json").read_text())
    names = {image["id"]: image["file_name"] for image in doc["images"]}
    boxes: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for ann in doc["annotations"]:
        boxes[names[ann["image_id"]]].append(ann["bbox"])
    return boxes


def coverage(box: list[float], regions: list[Region], width: int, height: int) -> float:
    mask = union_mask(regions, width, height) > 0
    x, y, w, h = (round(v) for v in box)
    return float(mask[y : y + h, x : x + w].mean())


def check_coco_agrees(out: Path) -> None:
    """faces.coco.json holds the same images, faces and boxes as faces.jsonl."""
    coco = json.loads((out / "faces.coco.json").read_text("utf-8"))
    ok = [line for line in lines_of(out) if line["status"] == "ok" and line["kind"] == "image"]
    assert [image["file_name"] for image in coco["images"]] == [line["path"] for line in ok]
    assert [image["id"] for image in coco["images"]] == list(range(1, len(ok) + 1))
    assert coco["categories"] == [{"id": 1, "name": "face"}]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for image, line in zip(coco["images"], ok, strict=True):
        assert (image["width"], image["height"]) == (line["width"], line["height"])
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == len(line["faces"]), line["path"]
        for ann, face in zip(anns, line["faces"], strict=True):
            assert ann["bbox"] == face["bbox"] and ann["score"] == face["score"]
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert ann["source"] == face.get("source", "detector")
            assert ann["area"] == pytest.approx(face["bbox"][2] * face["bbox"][3], abs=0.01)


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose (valid, CRC-checked) header claims ``width`` x ``height`` RGB, with a token IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (3 * 64 + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def exif_bytes(orientation: int | None = None) -> bytes:
    """EXIF naming a camera and a GPS position (and an orientation when given)."""
    exif = Image.Exif()
    exif[MAKE] = "SpyCam"
    if orientation:
        exif[ORIENTATION] = orientation
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return exif.tobytes()


def with_app1(jpeg: bytes, exif: bytes) -> bytes:
    """The JPEG with an extra APP1 EXIF segment right after SOI (pixel data untouched)."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


def assert_no_identifying_exif(path: Path) -> None:
    data = path.read_bytes()
    assert b"SpyCam" not in data
    with Image.open(path) as im:
        exif = im.getexif()
        assert GPS_IFD not in exif and MAKE not in exif
        assert set(exif) <= {ORIENTATION}


@pytest.fixture(scope="module")
def dlib_images(shared_data: Path) -> Path:
    folder = shared_data / "dlib-faces-coco" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    return folder


@pytest.fixture(scope="module")
def photo(dlib_images: Path) -> Path:
    return dlib_images / PHOTO


@pytest.fixture(scope="module")
def imagenet(shared_data: Path) -> Path:
    folder = shared_data / "imagenet-sample" / "images"
    if not (folder / FROG).is_file():
        pytest.skip(f"{folder / FROG} not available")
    return folder


# --- bad and awkward inputs in one run -----------------------------------------------------------

BAD = {
    "bad/truncated.jpg": "truncated",
    "bad/empty.jpg": "empty",
    "bad/notes.jpg": "not an image",
    "bad/huge.png": "too large",
}
GOOD = ["good/cmyk.jpg", "good/rotated-6.jpg", "good/rotated-8.jpg", "good/deep.png", "good/alpha.png"]
ODD_NAME = "sub dir/été 1.jpg"


@dataclass
class Mixed:
    source: Path
    out: Path
    run: Result
    before: dict[str, str]
    upright: np.ndarray


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, photo: Path) -> Mixed:
    """One run over broken files and awkward-but-valid ones side by side."""
    src = tmp_path_factory.mktemp("mixed") / "in"
    (src / "bad").mkdir(parents=True)
    (src / "good").mkdir()
    (src / "sub dir").mkdir()
    data = photo.read_bytes()
    (src / "bad" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (src / "bad" / "empty.jpg").write_bytes(b"")
    (src / "bad" / "notes.jpg").write_text("shopping list: eggs, milk\n")
    (src / "bad" / "huge.png").write_bytes(png_with_header(100_000, 100_000))
    with Image.open(photo) as im:
        upright = im.convert("RGB")
    upright.convert("CMYK").save(src / "good" / "cmyk.jpg", quality=95)
    # stored sideways; only EXIF orientation 6 / 8 turns it upright for display
    upright.transpose(Image.Transpose.ROTATE_90).save(
        src / "good" / "rotated-6.jpg", quality=95, exif=exif_bytes(6)
    )
    upright.transpose(Image.Transpose.ROTATE_270).save(
        src / "good" / "rotated-8.jpg", quality=95, exif=exif_bytes(8)
    )
    pixels = np.asarray(upright)
    h, w = pixels.shape[:2]
    deep = (
        pixels.astype(np.uint16) * 256
        + (np.arange(w)[None, :, None] * 7 + np.arange(h)[:, None, None] * 3) % 256
    )
    assert cv2.imwrite(
        str(src / "good" / "deep.png"), cv2.cvtColor(deep.astype(np.uint16), cv2.COLOR_RGB2BGR)
    )
    alpha = ((np.arange(w)[None, :] + 2 * np.arange(h)[:, None]) % 255 + 1).astype(np.uint8)
    Image.fromarray(np.dstack([pixels, alpha])).save(src / "good" / "alpha.png")
    shutil.copyfile(photo, src / ODD_NAME)
    before = hashes(src)
    out = src.parent / "out"
    result = run_cli("run", src, "-o", out, "-j", "1", "-q")
    return Mixed(src, out, result, before, pixels.astype(np.int32))


def test_mixed_run_exit_code_and_summary(mixed: Mixed) -> None:
    assert mixed.run.code == 1, mixed.run.err
    assert f"{len(GOOD) + 1} done" in mixed.run.err and f"{len(BAD)} failed" in mixed.run.err
    lines = lines_of(mixed.out)
    assert [line["path"] for line in lines] == sorted([*BAD, *GOOD, ODD_NAME])
    check_coco_agrees(mixed.out)
    assert temp_files(mixed.out) == []
    assert mixed.run.seconds < 60  # the 100000x100000 header did not get decoded


@pytest.mark.parametrize("rel", sorted(BAD))
def test_bad_input_fails_closed(mixed: Mixed, rel: str) -> None:
    assert mixed.run.code == 1
    line = by_path(mixed.out)[rel]
    assert list(line) == ERROR_KEYS
    assert line["status"] == "error" and line["kind"] == "image"
    assert BAD[rel] in line["error"].lower(), line["error"]
    assert "Traceback" not in line["error"] and "internal error" not in line["error"]
    assert not (mixed.out / rel).exists()
    assert f"failed: {rel}: " in mixed.run.err
    # the rest of the run went on
    for good in [*GOOD, ODD_NAME]:
        assert by_path(mixed.out)[good]["status"] == "ok"
        assert (mixed.out / good).is_file()


def test_inputs_are_never_modified(mixed: Mixed) -> None:
    assert hashes(mixed.source) == mixed.before


def test_ok_lines_of_the_mixed_run(mixed: Mixed) -> None:
    lines = by_path(mixed.out)
    for rel in [*GOOD, ODD_NAME]:
        line = lines[rel]
        assert list(line) == OK_KEYS
        assert line["sha256"] == mixed.before[rel]
        assert (line["width"], line["height"]) == (500, 332), rel
        assert line["method"] == "blur" and line["written"] == "reencoded"
        assert len(line["faces"]) >= 4, rel
        with Image.open(mixed.out / rel) as im:
            im.load()
            assert im.format == ("JPEG" if rel.endswith(".jpg") else "PNG")


@pytest.mark.parametrize("rel", ["good/rotated-6.jpg", "good/rotated-8.jpg"])
def test_exif_rotated_face_hidden_as_displayed(mixed: Mixed, shared_data: Path, rel: str) -> None:
    line = by_path(mixed.out)[rel]
    assert line["status"] == "ok"
    assert (line["width"], line["height"]) == (500, 332)  # displayed, not stored (332x500)
    truth = ground_truth(shared_data)[PHOTO]
    regions = regions_of(line)
    centres = [(f["bbox"][0] + f["bbox"][2] / 2, f["bbox"][1] + f["bbox"][3] / 2) for f in line["faces"]]
    for box in truth:  # every face of the upright photo is covered ...
        assert coverage(box, regions, 500, 332) >= 0.8, box
        # ... by a detection that lies on it in displayed coordinates
        assert any(box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3] for cx, cy in centres)
    before = displayed(mixed.source / rel)
    after = displayed(mixed.out / rel)
    assert after.shape == before.shape == (332, 500, 3)
    assert np.abs(before - mixed.upright).mean() < 3  # the input really shows the upright photo
    check_jpeg_hidden(before, after, line, noise=2.0)
    assert_no_identifying_exif(mixed.out / rel)


def test_cmyk_jpeg(mixed: Mixed, shared_data: Path) -> None:
    line = by_path(mixed.out)["good/cmyk.jpg"]
    regions = regions_of(line)
    covered = [coverage(box, regions, 500, 332) >= 0.8 for box in ground_truth(shared_data)[PHOTO]]
    assert sum(covered) >= 5
    with Image.open(mixed.source / "good" / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    before = displayed(mixed.source / "good" / "cmyk.jpg")  # Pillow's CMYK to RGB, as faceveil (no profile)
    check_jpeg_hidden(before, displayed(mixed.out / "good" / "cmyk.jpg"), line, noise=2.0)


def test_sixteen_bit_png(mixed: Mixed) -> None:
    line = by_path(mixed.out)["good/deep.png"]
    before = cv2.imread(str(mixed.source / "good" / "deep.png"), cv2.IMREAD_UNCHANGED)
    after = cv2.imread(str(mixed.out / "good" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert after.dtype == np.uint16 and after.shape == before.shape == (332, 500, 3)
    regions = regions_of(line)
    keep = untouched_zone(regions, 500, 332, extra=2)
    assert np.array_equal(after[keep], before[keep])  # lossless: exactly unchanged away from faces
    diff = np.abs(after.astype(np.int64) - before.astype(np.int64)).max(axis=2)
    for region in regions:
        assert diff[region_pixels(region, 500, 332)].mean() > 5 * 256
    assert np.any(after[~keep] % 256 != 0)  # still 16-bit values, not 8-bit scaled up


def test_png_alpha_kept_bit_exact(mixed: Mixed) -> None:
    line = by_path(mixed.out)["good/alpha.png"]
    with Image.open(mixed.source / "good" / "alpha.png") as im:
        before = np.asarray(im)
    with Image.open(mixed.out / "good" / "alpha.png") as im:
        assert im.mode == "RGBA"
        after = np.asarray(im)
    assert np.array_equal(after[..., 3], before[..., 3])
    regions = regions_of(line)
    keep = untouched_zone(regions, 500, 332, extra=2)
    assert np.array_equal(after[keep], before[keep])
    diff = np.abs(after[..., :3].astype(int) - before[..., :3].astype(int)).mean(axis=2)
    for region in regions:
        assert diff[region_pixels(region, 500, 332)].mean() > 5


def test_spaces_and_non_ascii_names(mixed: Mixed, photo: Path) -> None:
    line = by_path(mixed.out)[ODD_NAME]
    assert line["status"] == "ok" and line["sha256"] == sha256(photo)
    assert (mixed.out / "sub dir" / "été 1.jpg").is_file()
    assert "été".encode() in (mixed.out / "faces.jsonl").read_bytes()
    coco = json.loads((mixed.out / "faces.coco.json").read_text("utf-8"))
    assert ODD_NAME in [image["file_name"] for image in coco["images"]]
    check_jpeg_hidden(displayed(photo), displayed(mixed.out / ODD_NAME), line)


def test_rerun_retries_failures_only(mixed: Mixed, tmp_path: Path) -> None:
    """A second run redoes nothing that worked and still reports (and exits 1 for) the broken files."""
    out = tmp_path / "copy"
    shutil.copytree(mixed.out, out)
    src_state = hashes(mixed.out)
    result = run_cli("run", mixed.source, "-o", out, "-j", "1", "-q")
    assert result.code == 1
    assert f"0 done, {len(GOOD) + 1} already done" in result.err and f"{len(BAD)} failed" in result.err
    assert hashes(out) == src_state


def test_input_turned_bad_loses_its_output(tmp_path: Path, photo: Path) -> None:
    """Fail closed on a re-run too: an input replaced by a broken file leaves no stale output behind."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copyfile(photo, src / "a.jpg")
    assert run_cli("run", src, "-o", out, "-j", "1", "-q").code == 0
    assert (out / "a.jpg").is_file()
    (src / "a.jpg").write_bytes(photo.read_bytes()[:3000])
    result = run_cli("run", src, "-o", out, "-j", "1", "-q")
    assert result.code == 1
    assert by_path(out)["a.jpg"]["status"] == "error"
    assert not (out / "a.jpg").exists()
    coco = json.loads((out / "faces.coco.json").read_text())
    assert coco["images"] == [] and coco["annotations"] == []
    shutil.copyfile(photo, src / "a.jpg")  # fixed: the next run redoes it
    assert run_cli("run", src, "-o", out, "-j", "1", "-q").code == 0
    assert by_path(out)["a.jpg"]["status"] == "ok" and (out / "a.jpg").is_file()


# --- refusing oversized images before decoding ----------------------------------------------------

MEASURE = """
import resource, sys, time
from faceveil.cli import main
started = time.monotonic()
code = main(sys.argv[1:])
print(time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


@pytest.mark.slow
def test_huge_png_refused_before_decoding_in_bounded_memory(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_with_header(100_000, 100_000))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, "run", str(huge), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    seconds, max_rss_kib = proc.stdout.split()
    assert float(seconds) < 30
    assert int(max_rss_kib) < 1024 * 1024, "decoding started: over 1 GiB resident"
    line = by_path(out)["huge.png"]
    assert line["status"] == "error" and "too large" in line["error"]
    assert not (out / "huge.png").exists()


def test_max_pixels_option_refuses_from_the_header(tmp_path: Path) -> None:
    """A 2000x2000 header with a token body: refused by size, not by its (broken) pixel data."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.png").write_bytes(png_with_header(2000, 2000))
    result = run_cli("run", tmp_path / "in", "-o", tmp_path / "out", "--max-pixels", "1000000", "-q")
    assert result.code == 1
    line = by_path(tmp_path / "out")["big.png"]
    assert line["error"] == "image too large: 2000x2000 = 4000000 pixels (limit 1000000)"
    assert not (tmp_path / "out" / "big.png").exists()


# --- contract checks on a real data set ----------------------------------------------------------


@pytest.fixture(scope="module")
def dlib_run(tmp_path_factory: pytest.TempPathFactory, dlib_images: Path) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("dlib") / "out"
    return out, run_cli("run", dlib_images, "-o", out, "-j", "1", "-q")


@pytest.mark.slow
def test_dlib_run_follows_the_contract(dlib_run: tuple[Path, Result], dlib_images: Path) -> None:
    out, result = dlib_run
    assert result.code == 0, result.err
    inputs = sorted(p.name for p in dlib_images.iterdir())
    lines = lines_of(out)
    assert [line["path"] for line in lines] == inputs and len(inputs) == 9
    for line in lines:
        source = dlib_images / line["path"]
        assert list(line) == OK_KEYS
        assert line["status"] == "ok" and line["kind"] == "image"
        assert line["sha256"] == sha256(source)
        with Image.open(source) as im:
            assert (line["width"], line["height"]) == ImageOps.exif_transpose(im).size
        assert line["method"] == "blur" and line["written"] == "reencoded"
        for face in line["faces"]:
            assert list(face) == FACE_KEYS
            assert len(face["bbox"]) == 4 and all(isinstance(v, float) for v in face["bbox"])
            assert face["bbox"][2] > 0 and face["bbox"][3] > 0
            assert 0.0 <= face["score"] <= 1.0
            assert set(face["detector"].split("+")) <= {"yunet", "centerface"}
            assert face["source"] == "detector"
            marks = face["landmarks"]
            assert marks is None or (len(marks) == 5 and all(len(m) == 2 for m in marks))
            region = face["region"]
            assert region["shape"] == "ellipse" and set(region) == {"shape", "bbox"}
            assert all(isinstance(v, float) for v in region["bbox"])
            x, y, w, h = face["bbox"]
            grown = [x - 0.35 * w, y - 0.35 * h, 1.7 * w, 1.7 * h]
            assert region["bbox"] == pytest.approx(grown, abs=0.02)
        with Image.open(out / line["path"]) as im:
            assert im.format == "JPEG" and im.size == (line["width"], line["height"])
    check_coco_agrees(out)
    assert temp_files(out) == []
    assert (out / ".faceveil" / "journal.sqlite").is_file()


@pytest.mark.slow
def test_dlib_every_face_protected(dlib_run: tuple[Path, Result], shared_data: Path) -> None:
    out, _ = dlib_run
    lines = by_path(out)
    truth = ground_truth(shared_data)
    scores = [
        coverage(box, regions_of(lines[name]), lines[name]["width"], lines[name]["height"])
        for name, boxes in truth.items()
        for box in boxes
    ]
    assert len(scores) == 43
    protected = sum(s >= 0.8 for s in scores)
    assert protected >= 41, sorted(scores)[:5]


@pytest.mark.slow
def test_dlib_pixels_changed_only_in_regions(dlib_run: tuple[Path, Result], dlib_images: Path) -> None:
    out, _ = dlib_run
    for line in lines_of(out):
        check_jpeg_hidden(displayed(dlib_images / line["path"]), displayed(out / line["path"]), line)
        assert_no_identifying_exif(out / line["path"])


@pytest.mark.slow
def test_detect_writes_faces_only(tmp_path: Path, dlib_images: Path, dlib_run: tuple[Path, Result]) -> None:
    out = tmp_path / "det"
    result = run_cli("detect", dlib_images, "-o", out, "-j", "1", "-q")
    assert result.code == 0, result.err
    lines = lines_of(out)
    assert len(lines) == 9
    hidden = by_path(dlib_run[0])
    for line in lines:
        assert list(line) == ["path", "status", "kind", "width", "height", "sha256", "faces"]
        assert line["faces"], line["path"]
        for face in line["faces"]:
            assert list(face) == ["bbox", "score", "detector", "landmarks"]
        # by default the detector's own thresholds: exactly the faces `run` hides
        assert [f["bbox"] for f in line["faces"]] == [f["bbox"] for f in hidden[line["path"]]["faces"]]
    check_coco_agrees(out)
    strict = tmp_path / "strict"
    assert run_cli("detect", dlib_images, "-o", strict, "-j", "1", "-q", "--min-score", "0.9").code == 0
    kept = [face["score"] for line in lines_of(strict) for face in line["faces"]]
    assert kept and min(kept) >= 0.9
    assert len(kept) < sum(len(line["faces"]) for line in lines)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {p for p in written if not p.startswith(".faceveil/")} == {"faces.jsonl", "faces.coco.json"}


# --- no face: copied without metadata ------------------------------------------------------------


def test_no_face_is_copied_without_metadata(tmp_path: Path, imagenet: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "frog.jpg").write_bytes(with_app1((imagenet / FROG).read_bytes(), exif_bytes()))
    shutil.copyfile(imagenet / CAN_OPENER, src / "can opener.jpg")
    with Image.open(src / "frog.jpg") as im:
        assert im.getexif()[MAKE] == "SpyCam" and im.getexif().get_ifd(GPS_IFD)  # the test input has them
    result = run_cli("run", src, "-o", tmp_path / "out", "-j", "1", "-q")
    assert result.code == 0, result.err
    lines = by_path(tmp_path / "out")
    for name in ("frog.jpg", "can opener.jpg"):
        line = lines[name]
        assert line["faces"] == [] and line["written"] == "copied" and line["status"] == "ok"
        source, copy = src / name, tmp_path / "out" / name
        with Image.open(source) as a, Image.open(copy) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))  # same stored pixels
        assert np.array_equal(displayed(source), displayed(copy))  # and the same as displayed
        assert copy.read_bytes() != source.read_bytes()
        assert_no_identifying_exif(copy)
    with Image.open(tmp_path / "out" / "can opener.jpg") as im:
        assert im.getexif().get(ORIENTATION) == 6  # orientation is kept: it is not identifying
    assert (lines["can opener.jpg"]["width"], lines["can opener.jpg"]["height"]) == (294, 392)


# --- other methods and shapes --------------------------------------------------------------------


@pytest.fixture
def astronaut_png(tmp_path: Path, astronaut: np.ndarray) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "astronaut.png")
    return src


def test_method_box_with_box_shape(astronaut_png: Path, astronaut: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", astronaut_png, "-o", out, "--method", "box", "--shape", "box", "-j", "1", "-q")
    assert result.code == 0, result.err
    line = by_path(out)["astronaut.png"]
    assert line["method"] == "box" and len(line["faces"]) == 1
    region = line["faces"][0]["region"]
    assert region == {"shape": "box", "bbox": region["bbox"]}
    x, y, w, h = region["bbox"]
    assert x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512
    fx, fy, fw, fh = line["faces"][0]["bbox"]
    assert x < fx and y < fy and x + w > fx + fw and y + h > fy + fh
    after = np.asarray(Image.open(out / "astronaut.png"))
    inside = region_pixels(Region("box", (x, y, w, h)), 512, 512)
    assert (after[inside] == 0).all()
    assert np.array_equal(after[~inside], astronaut[~inside])


def test_method_pixelate(astronaut_png: Path, astronaut: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", astronaut_png, "-o", out, "--method", "pixelate", "-j", "1", "-q")
    assert result.code == 0, result.err
    line = by_path(out)["astronaut.png"]
    assert line["method"] == "pixelate" and len(line["faces"]) == 1
    region = Region.from_json(line["faces"][0]["region"])
    assert region.shape == "ellipse"
    after = np.asarray(Image.open(out / "astronaut.png"))
    inside = region_pixels(region, 512, 512)
    colours_before = len(np.unique(astronaut[inside], axis=0))
    colours_after = len(np.unique(after[inside], axis=0))
    assert colours_before > 2000 and colours_after <= 100  # about 8x8 cells of one colour each
    keep = untouched_zone([region], 512, 512, extra=2)
    assert np.array_equal(after[keep], astronaut[keep])


# --- an output folder the user cannot write to -------------------------------------------------------


def python_for(uid: int, gid: int, cwd: Path) -> tuple[list[str], dict[str, str]] | None:
    """A command and environment that run this checkout's faceveil as ``uid``, or None if none can."""
    env = dict(os.environ, HOME=str(cwd))
    candidates = [([sys.executable], env)]
    # this interpreter may sit in a folder only root can read: try the system's Python of the same
    # version with this venv's packages and this checkout on its path
    purelib = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for system in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if Path(system).is_file() and system != sys.executable:
            path = os.pathsep.join(filter(None, [purelib, str(REPO), os.environ.get("PYTHONPATH")]))
            candidates.append(([system], dict(env, PYTHONPATH=path)))
    for command, cmd_env in candidates:
        try:
            probe = subprocess.run(
                [*command, "-c", "import faceveil.cli, onnxruntime, cv2"],
                user=uid,
                group=gid,
                extra_groups=[],
                env=cmd_env,
                cwd=cwd,
                capture_output=True,
                timeout=60,
            )
        except OSError:  # cannot even start it (a folder on its path is closed to that user)
            continue
        if probe.returncode == 0:
            return command, cmd_env
    return None


@contextlib.contextmanager
def world_readable_tmp() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="faceveil-perm-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_unwritable_output_folder(photo: Path) -> None:
    """Exit 2 with a clear reason before any work (as an unprivileged user when run as root)."""
    with world_readable_tmp() as root:
        image = root / "photo.jpg"
        shutil.copyfile(photo, image)
        image.chmod(0o644)
        locked = root / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        as_user: dict[str, object] = {}
        command: list[str] = [sys.executable]
        env = dict(os.environ)
        if os.geteuid() == 0:
            found = python_for(65534, 65534, root)
            if found is None:
                pytest.skip("no Python that user 65534 can run with faceveil importable")
            command, env = found
            as_user = {"user": 65534, "group": 65534, "extra_groups": []}
        for out in (locked, locked / "new"):
            proc = subprocess.run(
                [*command, "-m", "faceveil", "run", str(image), "-o", str(out), "-q"],
                capture_output=True,
                text=True,
                env=env,
                cwd=root,
                timeout=120,
                **as_user,  # type: ignore[arg-type]
            )
            assert proc.returncode == 2, proc.stderr
            assert "faceveil: error: cannot write to the output folder" in proc.stderr
            assert str(out) in proc.stderr and "Permission denied" in proc.stderr
            assert "Traceback" not in proc.stderr
        assert list(locked.iterdir()) == []


# --- killed with SIGKILL, then resumed -----------------------------------------------------------


def make_many(src: Path, dlib_images: Path, imagenet: Path) -> list[str]:
    """About 40 real photos and variants of them, in two folders and three formats."""
    (src / "sub").mkdir(parents=True)
    rels = []
    for i, path in enumerate(sorted(dlib_images.glob("*.jpg"))):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        shutil.copyfile(path, src / f"a{i}.jpg")
        ImageOps.mirror(rgb).save(src / f"b{i}.jpg", quality=85)
        rgb.resize((rgb.width * 2 // 3, rgb.height * 2 // 3)).save(src / f"c{i}.png")
        ImageOps.grayscale(rgb).save(src / "sub" / f"d{i}.jpg", quality=90)
        rels += [f"a{i}.jpg", f"b{i}.jpg", f"c{i}.png", f"sub/d{i}.jpg"]
    for name in (FROG, CAN_OPENER, "n02999410_chain.JPEG", "n02865351_bolo_tie.JPEG"):
        shutil.copyfile(imagenet / name, src / "sub" / name)
        rels.append(f"sub/{name}")
    return sorted(rels)


def visible_outputs(out: Path, rels: list[str]) -> list[str]:
    return [rel for rel in rels if (out / rel).is_file()]


def alive_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def decodes(path: Path) -> None:
    with Image.open(path) as im:
        im.load()


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path: Path, dlib_images: Path, imagenet: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to follow the killed run's worker processes")
    src, out = tmp_path / "in", tmp_path / "out"
    rels = make_many(src, dlib_images, imagenet)
    assert len(rels) == 40
    inputs_before = hashes(src)
    command = faceveil_command("run", src, "-o", out, "-j", "2", "-q")

    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180
        while len(visible_outputs(out, rels)) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-way
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive_in_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive_in_group(proc.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    done = visible_outputs(out, rels)
    assert 3 <= len(done) < len(rels), "not killed mid-way"
    for rel in done:  # what is visible is complete
        decodes(out / rel)
    # a writer killed mid-write leaves its hidden temp file: make sure there is one to clean up
    half = (dlib_images / PHOTO).read_bytes()[:5000]
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / ".d3.jpg.0123456789ab.tmp.jpg").write_bytes(half)
    (out / ".faces.jsonl.ba9876543210.tmp.jsonl").write_bytes(b'{"path": ')

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 failed" in resumed.stderr
    for rel in rels:
        decodes(out / rel)
    assert temp_files(out) == []
    lines = lines_of(out)
    assert [line["path"] for line in lines] == rels  # one line per input, sorted
    assert all(line["status"] == "ok" for line in lines)
    check_coco_agrees(out)
    assert hashes(src) == inputs_before
    after_resume = hashes(out)

    third = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr
    assert f"0 done, {len(rels)} already done" in third.stderr
    assert hashes(out) == after_resume
