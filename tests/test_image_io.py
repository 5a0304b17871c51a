"""Image reading, writing and metadata stripping, on real files made here and real photos."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps, PngImagePlugin

from faceveil.errors import InputError
from faceveil.io.atomic import atomic_path, atomic_write_bytes
from faceveil.io.image import (
    IMAGE_SUFFIXES,
    Picture,
    copy_stripped,
    is_image_path,
    read_picture,
    write_picture,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTO = DATA / "dlib-faces-coco" / "images" / "2008_002470.jpg"
RGB_PNG_PHOTO = DATA / "facemask-voc" / "images" / "maksssksksss0.png"  # RGB, with an eXIf chunk
RGBA_PHOTO = DATA / "facemask-voc" / "images" / "maksssksksss1.png"
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.5N"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


# --- helpers -------------------------------------------------------------------------------------


def real(path: Path) -> Path:
    """A file from the shared evaluation data, or skip when it is not there."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def pattern(h: int = 48, w: int = 64, channels: int = 3, dtype: type = np.uint8) -> np.ndarray:
    """A smooth, asymmetric test image (compresses well, shows any rotation or flip)."""
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:h, 0:w]
    planes = [x * top // max(w - 1, 1), y * top // max(h - 1, 1), (x + 2 * y) * top // (w + 2 * h)]
    planes += [np.full((h, w), top * 3 // 4)] * (channels - 3)
    return np.stack(planes[:channels], axis=2).astype(dtype) if channels > 1 else planes[0].astype(dtype)


def decoded(path: Path) -> np.ndarray:
    """Pixels as displayed, decoded by the module under test."""
    return read_picture(path).pixels


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of each chunk of a PNG file."""
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of each JPEG segment up to the first scan."""
    segments, pos = [], 2
    while data[pos + 1] != 0xDA:
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    return segments


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    """One JPEG marker segment."""
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(fourcc, payload) of each top-level chunk of a WebP file."""
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], offset: int, next_ifd: int) -> bytes:
    """A little-endian IFD at ``offset``: entries are (tag, type, count, value bytes)."""
    data_at = offset + 2 + 12 * len(entries) + 4
    head, extra = struct.pack("<H", len(entries)), b""
    for tag, typ, count, raw in sorted(entries):
        if len(raw) <= 4:
            head += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\x00")
        else:
            head += struct.pack("<HHII", tag, typ, count, data_at + len(extra))
            extra += raw + b"\x00" * (len(raw) & 1)
    return head + struct.pack("<I", next_ifd) + extra


def tiff_rgb16(rgb: np.ndarray, orientation: int) -> bytes:
    """An uncompressed little-endian 16-bit RGB TIFF with an orientation tag (Pillow cannot write one)."""
    h, w, _ = rgb.shape
    pixels = rgb.astype("<u2").tobytes()
    entries = [
        (256, 4, 1, struct.pack("<I", w)),
        (257, 4, 1, struct.pack("<I", h)),
        (258, 3, 3, struct.pack("<3H", 16, 16, 16)),
        (259, 3, 1, struct.pack("<H", 1)),
        (262, 3, 1, struct.pack("<H", 2)),
        (273, 4, 1, b""),
        (274, 3, 1, struct.pack("<H", orientation)),
        (277, 3, 1, struct.pack("<H", 3)),
        (278, 4, 1, struct.pack("<I", h)),
        (279, 4, 1, struct.pack("<I", len(pixels))),
    ]
    strip_at = 8 + len(tiff_ifd(entries, 8, 0))
    entries[5] = (273, 4, 1, struct.pack("<I", strip_at))
    return b"II*\x00" + struct.pack("<I", 8) + tiff_ifd(entries, 8, 0) + pixels


def gps_exif_with_thumbnail(thumbnail: bytes, orientation: int | None = None) -> bytes:
    """An EXIF APP1 payload with Make, GPS position and an IFD1 JPEG thumbnail, built by hand."""
    ifd0 = [(0x010F, 2, 12, b"SecretMake\x00\x00")]
    if orientation is not None:
        ifd0.append((0x0112, 3, 1, struct.pack("<H", orientation)))
    ifd0_size = len(tiff_ifd([*ifd0, (0x8825, 4, 1, b"\x00" * 4)], 8, 0))
    gps_at = 8 + ifd0_size
    gps = [(1, 2, 2, b"N\x00"), (2, 5, 3, struct.pack("<6I", 48, 1, 51, 1, 30, 1))]
    gps_size = len(tiff_ifd(gps, gps_at, 0))
    ifd1_at = gps_at + gps_size
    thumb_at = ifd1_at + 2 + 12 * 3 + 4
    ifd1 = [
        (0x0103, 3, 1, struct.pack("<H", 6)),
        (0x0201, 4, 1, struct.pack("<I", thumb_at)),
        (0x0202, 4, 1, struct.pack("<I", len(thumbnail))),
    ]
    body = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + tiff_ifd([*ifd0, (0x8825, 4, 1, struct.pack("<I", gps_at))], 8, ifd1_at)
        + tiff_ifd(gps, gps_at, 0)
        + tiff_ifd(ifd1, ifd1_at, 0)
        + thumbnail
    )
    return b"Exif\x00\x00" + body


def with_segments(jpeg: bytes, *segments: bytes) -> bytes:
    """Insert marker segments right after SOI."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def encode_jpeg(pixels: np.ndarray, **params: object) -> bytes:
    """JPEG bytes of ``pixels``, as Pillow writes them."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", **params)
    return buf.getvalue()


@pytest.fixture
def marked_jpeg(tmp_path: Path) -> tuple[Path, bytes]:
    """A JPEG carrying EXIF (GPS, maker, thumbnail), XMP, IPTC and a comment; returns (path, thumbnail)."""
    thumbnail = encode_jpeg(pattern(8, 8), quality=50)
    data = with_segments(
        encode_jpeg(pattern(), quality=85),
        jpeg_segment(0xE1, gps_exif_with_thumbnail(thumbnail)),
        jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP),
        jpeg_segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0bSecretIPTC\x00"),
        jpeg_segment(0xFE, b"SecretComment"),
    )
    path = tmp_path / "marked.jpg"
    path.write_bytes(data)
    return path, thumbnail


def assert_no_identifying_metadata(data: bytes, thumbnail: bytes) -> None:
    for needle in (
        b"Exif",
        b"http://ns.adobe.com/xap",
        b"SecretMake",
        b"Photoshop",
        b"SecretComment",
        thumbnail,
    ):
        assert needle not in data
    assert data.count(b"\xff\xd8\xff") == 1
    allowed = {0xE0, 0xE2, 0xEE} | set(range(0xC0, 0xE0))
    assert {marker for marker, _ in jpeg_segments(data)} <= allowed
    with Image.open(io.BytesIO(data)) as im:
        assert dict(im.getexif()) == {}


# --- basics --------------------------------------------------------------------------------------


def test_suffixes_and_is_image_path() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"} == IMAGE_SUFFIXES
    assert is_image_path(Path("a/B.JPG"))
    assert is_image_path(Path("x.heic"))
    assert not is_image_path(Path("x.gif"))
    assert not is_image_path(Path("jpg"))


def test_truncated_loading_stays_off() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_real_jpeg_reads_as_displayed_and_writable() -> None:
    pic = read_picture(real(PHOTO))
    with Image.open(PHOTO) as im:
        expected = np.asarray(im.convert("RGB"))
    assert pic.format == "JPEG"
    assert (pic.width, pic.height) == (500, 332)
    assert pic.pixels.dtype == np.uint8
    assert pic.pixels.shape == (332, 500, 3)
    assert pic.pixels.flags.writeable and pic.pixels.flags.c_contiguous
    assert not pic.oriented
    np.testing.assert_array_equal(pic.pixels, expected)
    assert pic.rgb8().shape == (332, 500, 3)


# --- refusing bad inputs -------------------------------------------------------------------------


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    data = real(PHOTO).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_picture(cut)


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(InputError, match="empty file"):
        read_picture(empty)


def test_text_named_jpg_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a picture\n" * 10)
    with pytest.raises(InputError, match="not an image"):
        read_picture(fake)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_picture(tmp_path / "nope.jpg")


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    gif = tmp_path / "a.gif"
    Image.fromarray(pattern()).save(gif)
    with pytest.raises(InputError, match="GIF images are not supported"):
        read_picture(gif)


def test_png_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 301))
        + png_chunk(b"IEND", b"")
    )
    start = time.perf_counter()
    with pytest.raises(InputError, match="too large") as err:
        read_picture(bomb)
    assert time.perf_counter() - start < 1.0
    assert "10000000000 pixels" in str(err.value)


def test_own_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(pattern(20, 30)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # also truncated: a decode would fail differently
    with pytest.raises(InputError, match=r"30x20 = 600 pixels \(limit 500\)"):
        read_picture(path, max_pixels=500)
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_picture(path)


def test_corrupt_png_data_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(pattern()).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[60:70] = b"\x00" * 10  # inside IDAT: bad CRC and a broken stream
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError):
        read_picture(path)


@pytest.mark.parametrize(("name", "fmt"), [("anim.webp", "WEBP"), ("anim.png", "PNG"), ("pages.tif", "TIFF")])
def test_multi_frame_files_are_refused(tmp_path: Path, name: str, fmt: str) -> None:
    frames = [Image.fromarray(pattern()), Image.fromarray(255 - pattern())]
    path = tmp_path / name
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="has 2 frames; animated/multi-page images are not supported"):
        read_picture(path)


# --- JPEG ----------------------------------------------------------------------------------------


def test_jpeg_write_keeps_quality_icc_and_subsampling(tmp_path: Path) -> None:
    pic = read_picture(real(PHOTO))
    out = tmp_path / "out.jpg"
    write_picture(pic, pic.pixels, out)
    with Image.open(PHOTO) as src, Image.open(out) as dst:
        assert dst.quantization == src.quantization
        assert dst.layer == src.layer  # component sampling factors
        assert dst.info.get("icc_profile") == src.info.get("icc_profile") is not None
    assert np.abs(decoded(out).astype(int) - pic.pixels).mean() < 2.0
    write_picture(pic, pic.pixels, out, quality=40)
    with Image.open(PHOTO) as src, Image.open(out) as dst:
        assert dst.quantization != src.quantization


def test_grey_jpeg_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "grey.jpg"
    src.write_bytes(encode_jpeg(pattern(channels=1), quality=70))
    pic = read_picture(src)
    assert pic.pixels.shape == (48, 64)
    assert pic.rgb8().shape == (48, 64, 3)
    out = tmp_path / "grey out.jpg"
    write_picture(pic, pic.pixels, out)
    with Image.open(src) as a, Image.open(out) as b:
        assert b.mode == "L"
        assert a.quantization == b.quantization
    assert copy_stripped(pic, tmp_path / "copy.jpg") == "copied"
    np.testing.assert_array_equal(decoded(tmp_path / "copy.jpg"), pic.pixels)


def test_cmyk_jpeg_is_read_as_rgb(tmp_path: Path) -> None:
    cmyk = Image.fromarray(pattern(channels=3)).convert("CMYK")
    src = tmp_path / "cmyk.jpg"
    cmyk.save(src, quality=95)
    assert b"Adobe" in src.read_bytes()
    pic = read_picture(src)
    assert pic.pixels.shape == (48, 64, 3)
    with Image.open(src) as im:
        np.testing.assert_array_equal(pic.pixels, np.asarray(im.convert("RGB")))
    out = tmp_path / "out.jpg"
    write_picture(pic, pic.pixels, out)
    with Image.open(out) as im:
        assert im.mode == "RGB"
    assert np.abs(decoded(out).astype(int) - pic.pixels).mean() < 3.0
    assert copy_stripped(pic, tmp_path / "copy.jpg") == "copied"
    assert b"Adobe" in (tmp_path / "copy.jpg").read_bytes()
    np.testing.assert_array_equal(decoded(tmp_path / "copy.jpg"), pic.pixels)


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    stored = pattern(40, 60)
    thumbnail = encode_jpeg(pattern(8, 8), quality=50)
    src = tmp_path / "rotated.jpg"
    src.write_bytes(
        with_segments(
            encode_jpeg(stored, quality=90),
            jpeg_segment(0xE1, gps_exif_with_thumbnail(thumbnail, orientation=6)),
        )
    )
    pic = read_picture(src)
    assert pic.oriented
    assert (pic.width, pic.height) == (40, 60)
    with Image.open(src) as im:
        np.testing.assert_array_equal(pic.pixels, np.asarray(ImageOps.exif_transpose(im)))

    copy = tmp_path / "copy.jpg"
    assert copy_stripped(pic, copy) == "copied"
    data = copy.read_bytes()
    with Image.open(copy) as im:
        exif = im.getexif()
        assert dict(exif) == {0x0112: 6}
        assert exif.get_ifd(0x8825) == {}
    assert b"SecretMake" not in data and thumbnail not in data
    assert [len(p) for m, p in jpeg_segments(data) if m == 0xE1] == [6 + 26]
    again = read_picture(copy)
    assert again.oriented
    np.testing.assert_array_equal(again.pixels, pic.pixels)

    out = tmp_path / "out.jpg"
    write_picture(pic, pic.pixels, out)
    assert b"Exif" not in out.read_bytes()
    back = read_picture(out)
    assert not back.oriented
    assert back.pixels.shape == pic.pixels.shape
    assert np.abs(back.pixels.astype(int) - pic.pixels).mean() < 2.0


def test_identifying_jpeg_metadata_is_removed(tmp_path: Path, marked_jpeg: tuple[Path, bytes]) -> None:
    src, thumbnail = marked_jpeg
    source = src.read_bytes()
    assert b"SecretMake" in source and thumbnail in source and b"http://ns.adobe.com/xap" in source
    pic = read_picture(src)
    assert not pic.oriented
    copy, out = tmp_path / "copy.jpg", tmp_path / "out.jpg"
    assert copy_stripped(pic, copy) == "copied"
    write_picture(pic, pic.pixels, out)
    for path in (copy, out):
        assert_no_identifying_metadata(path.read_bytes(), thumbnail)
    np.testing.assert_array_equal(decoded(copy), pic.pixels)


def test_jpeg_copy_drops_jfif_thumbnail_and_trailer(tmp_path: Path) -> None:
    data = encode_jpeg(pattern(), quality=80)
    jfif = jpeg_segments(data)[0]
    assert jfif[0] == 0xE0
    thumb = bytes(range(256)) * 6  # a 16x32 RGB JFIF thumbnail
    fat_jfif = jpeg_segment(0xE0, jfif[1][:12] + b"\x10\x20" + thumb)
    start = 4 + len(jfif[1])
    src = tmp_path / "fat.jpg"
    src.write_bytes(data[:2] + fat_jfif + data[start:] + b"MOTION-PHOTO-TRAILER")
    pic = read_picture(src)
    copy = tmp_path / "copy.jpg"
    copy_stripped(pic, copy)
    out = copy.read_bytes()
    assert b"MOTION-PHOTO-TRAILER" not in out and thumb not in out and out.endswith(b"\xff\xd9")
    assert jpeg_segments(out)[0] == (0xE0, jfif[1][:12] + b"\x00\x00")
    np.testing.assert_array_equal(decoded(copy), pic.pixels)


def test_mpo_keeps_only_the_first_image(tmp_path: Path) -> None:
    src = tmp_path / "stereo.jpg"
    first, second = Image.fromarray(pattern()), Image.fromarray(pattern()[::-1].copy())
    first.save(src, format="MPO", save_all=True, append_images=[second])
    pic = read_picture(src)
    assert pic.format == "JPEG"
    copy = tmp_path / "copy.jpg"
    assert copy_stripped(pic, copy) == "copied"
    data = copy.read_bytes()
    assert data.count(b"\xff\xd8") == 1 and b"MPF" not in data
    np.testing.assert_array_equal(decoded(copy), pic.pixels)


def test_progressive_real_jpegs_copy_pixel_identical(tmp_path: Path) -> None:
    photos = sorted(real(DATA / "dlib-faces-coco" / "images").glob("*.jpg"))[:4]
    progressive = tmp_path / "progressive.jpg"
    with Image.open(photos[0]) as im:
        progressive.write_bytes(encode_jpeg(np.asarray(im), progressive=True, quality=75))
    for path in [*photos, progressive]:
        pic = read_picture(path)
        out = tmp_path / f"copy-{path.name}"
        assert copy_stripped(pic, out) == "copied"
        np.testing.assert_array_equal(decoded(out), pic.pixels)
    with Image.open(tmp_path / "copy-progressive.jpg") as im:
        assert im.info.get("progressive")


# --- orientation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "o.png"
    Image.fromarray(pattern(12, 20)).save(src, exif=exif.tobytes())
    pic = read_picture(src)
    assert pic.oriented == (orientation != 1)
    with Image.open(src) as im:
        np.testing.assert_array_equal(pic.pixels, np.asarray(ImageOps.exif_transpose(im)))
    assert pic.pixels.flags.c_contiguous and pic.pixels.flags.writeable
    copy = tmp_path / "copy.png"
    assert copy_stripped(pic, copy) == "copied"
    np.testing.assert_array_equal(decoded(copy), pic.pixels)
    exif_chunks = [p for t, p in png_chunks(copy.read_bytes()) if t == b"eXIf"]
    assert len(exif_chunks) == (orientation != 1)


# --- PNG -----------------------------------------------------------------------------------------


def test_sixteen_bit_grey_png(tmp_path: Path) -> None:
    grey = pattern(30, 40, channels=1, dtype=np.uint16)
    src = tmp_path / "g16.png"
    Image.fromarray(grey).save(src)
    pic = read_picture(src)
    assert pic.pixels.dtype == np.uint16 and pic.pixels.shape == (30, 40)
    np.testing.assert_array_equal(pic.pixels, grey)
    rgb = pic.rgb8()
    assert rgb.dtype == np.uint8 and rgb.shape == (30, 40, 3)
    np.testing.assert_array_equal(rgb[..., 1], grey >> 8)
    out = tmp_path / "out.png"
    write_picture(pic, pic.pixels, out)
    assert png_chunks(out.read_bytes())[0][1][8:10] == b"\x10\x00"  # bit depth 16, grey
    np.testing.assert_array_equal(decoded(out), grey)


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_png(tmp_path: Path, channels: int) -> None:
    rgb = pattern(30, 40, channels=channels, dtype=np.uint16)
    code = cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA
    data = cv2.imencode(".png", cv2.cvtColor(rgb, code))[1].tobytes()
    icc = png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(SRGB_ICC))
    phys = png_chunk(b"pHYs", struct.pack(">IIB", 11811, 11811, 1))
    src = tmp_path / "c16.png"
    src.write_bytes(data[:33] + icc + phys + data[33:])
    pic = read_picture(src)
    assert pic.pixels.dtype == np.uint16 and pic.pixels.shape == (30, 40, channels)
    np.testing.assert_array_equal(pic.pixels, rgb)
    assert pic.rgb8().dtype == np.uint8 and pic.rgb8().shape == (30, 40, 3)
    out = tmp_path / "out.png"
    write_picture(pic, pic.pixels, out)
    ihdr = png_chunks(out.read_bytes())[0][1]
    assert ihdr[8:10] == bytes((16, 2 if channels == 3 else 6))
    np.testing.assert_array_equal(decoded(out), rgb)
    with Image.open(out) as im:
        assert im.info["icc_profile"] == SRGB_ICC
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.1)


def test_sixteen_bit_png_orientation(tmp_path: Path) -> None:
    rgb = pattern(20, 30, dtype=np.uint16)
    data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "c16-rotated.png"
    src.write_bytes(data[:33] + png_chunk(b"eXIf", exif.tobytes()[6:]) + data[33:])
    pic = read_picture(src)
    assert pic.oriented and pic.pixels.dtype == np.uint16
    np.testing.assert_array_equal(pic.pixels, np.rot90(rgb, -1))
    assert copy_stripped(pic, tmp_path / "copy.png") == "copied"
    np.testing.assert_array_equal(decoded(tmp_path / "copy.png"), pic.pixels)


def test_png_alpha_is_kept_bit_exact(tmp_path: Path) -> None:
    pic = read_picture(real(RGBA_PHOTO))
    assert pic.pixels.shape[2] == 4
    alpha = pic.pixels[..., 3]
    assert pic.pixels.dtype == np.uint16  # this real photo is a 16-bit RGBA PNG
    assert alpha.min() < 65535  # and really is partly transparent
    changed = pic.pixels.copy()
    changed[:50, :50, :3] = 0
    out = tmp_path / "out.png"
    write_picture(pic, changed, out)
    back = decoded(out)
    np.testing.assert_array_equal(back, changed)
    np.testing.assert_array_equal(back[..., 3], alpha)
    assert copy_stripped(pic, tmp_path / "copy.png") == "copied"
    np.testing.assert_array_equal(decoded(tmp_path / "copy.png"), pic.pixels)


def test_real_png_exif_is_dropped_pixels_kept(tmp_path: Path) -> None:
    source = real(RGB_PNG_PHOTO).read_bytes()
    assert b"eXIf" in source
    pic = read_picture(RGB_PNG_PHOTO)
    copy = tmp_path / "copy.png"
    assert copy_stripped(pic, copy) == "copied"
    kinds = [t for t, _ in png_chunks(copy.read_bytes())]
    assert b"eXIf" not in kinds and b"sRGB" in kinds
    np.testing.assert_array_equal(decoded(copy), pic.pixels)


def test_png_metadata_chunks_are_dropped(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Secret Person")
    info.add_text("Comment", "SecretZ" * 50, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add(b"tIME", struct.pack(">HBBBBB", 2024, 1, 2, 3, 4, 5))
    info.add(b"prVt", b"SecretPrivate")
    src = tmp_path / "meta.png"
    exif = Image.Exif()
    exif[0x010F] = "SecretMake"
    Image.fromarray(pattern(channels=4)).save(src, pnginfo=info, exif=exif.tobytes(), icc_profile=SRGB_ICC)
    src.write_bytes(src.read_bytes() + b"SecretTrailer")
    kinds = {t for t, _ in png_chunks(src.read_bytes())}
    assert {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf", b"prVt", b"iCCP"} <= kinds
    pic = read_picture(src)
    for name, action in (("copy.png", "copied"), ("out.png", None)):
        dest = tmp_path / name
        if action:
            assert copy_stripped(pic, dest) == action
        else:
            write_picture(pic, pic.pixels, dest)
        data = dest.read_bytes()
        assert {t for t, _ in png_chunks(data)} <= {b"IHDR", b"iCCP", b"pHYs", b"IDAT", b"IEND"}
        assert b"Secret" not in data and b"xap" not in data
        np.testing.assert_array_equal(decoded(dest), pic.pixels)
        with Image.open(dest) as im:
            assert im.info["icc_profile"] == SRGB_ICC


def test_palette_pngs_are_read_as_rgb_or_rgba(tmp_path: Path) -> None:
    base = Image.fromarray(pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    plain, clear = tmp_path / "p.png", tmp_path / "pt.png"
    base.save(plain)
    base.save(clear, transparency=0)
    assert read_picture(plain).pixels.shape == (48, 64, 3)
    pic = read_picture(clear)
    assert pic.pixels.shape == (48, 64, 4)
    assert (pic.pixels[..., 3] == 0).any() and (pic.pixels[..., 3] == 255).any()
    out = tmp_path / "out.png"
    write_picture(pic, pic.pixels, out)
    np.testing.assert_array_equal(decoded(out), pic.pixels)
    assert copy_stripped(pic, tmp_path / "copy.png") == "copied"
    np.testing.assert_array_equal(decoded(tmp_path / "copy.png"), pic.pixels)


# --- WebP, BMP, TIFF, HEIF -----------------------------------------------------------------------


def test_webp_round_trips(tmp_path: Path) -> None:
    lossless, lossy = tmp_path / "ll.webp", tmp_path / "ly.webp"
    Image.fromarray(pattern(channels=4)).save(lossless, lossless=True)
    Image.fromarray(pattern()).save(lossy, quality=80)
    pic = read_picture(lossless)
    assert pic.pixels.shape == (48, 64, 4)
    write_picture(pic, pic.pixels, tmp_path / "ll-out.webp")
    assert b"VP8L" in (tmp_path / "ll-out.webp").read_bytes()
    np.testing.assert_array_equal(decoded(tmp_path / "ll-out.webp"), pic.pixels)
    pic = read_picture(lossy)
    write_picture(pic, pic.pixels, tmp_path / "ly-out.webp")
    data = (tmp_path / "ly-out.webp").read_bytes()
    assert b"VP8 " in data and b"VP8L" not in data
    assert np.abs(decoded(tmp_path / "ly-out.webp").astype(int) - pic.pixels).mean() < 3.0


@pytest.mark.parametrize("orientation", [1, 6])
def test_webp_copy_drops_exif_and_xmp(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretMake"
    exif[0x0112] = orientation
    src = tmp_path / "meta.webp"
    Image.fromarray(pattern()).save(src, quality=80, exif=exif.tobytes(), xmp=XMP, icc_profile=SRGB_ICC)
    assert {b"EXIF", b"XMP "} <= {c for c, _ in webp_chunks(src.read_bytes())}
    pic = read_picture(src)
    copy = tmp_path / "copy.webp"
    assert copy_stripped(pic, copy) == "copied"
    data = copy.read_bytes()
    chunks = webp_chunks(data)
    assert b"XMP " not in {c for c, _ in chunks} and b"Secret" not in data
    flags = chunks[0][1][0]
    assert flags & 0x04 == 0 and bool(flags & 0x08) == (orientation != 1)
    assert [len(p) for c, p in chunks if c == b"EXIF"] == ([26] if orientation != 1 else [])
    with Image.open(copy) as im:
        assert dict(im.getexif()) == ({0x0112: 6} if orientation != 1 else {})
        assert im.info["icc_profile"] == SRGB_ICC
    np.testing.assert_array_equal(decoded(copy), pic.pixels)
    write_picture(pic, pic.pixels, tmp_path / "out.webp")
    out = (tmp_path / "out.webp").read_bytes()
    assert b"EXIF" not in out and b"XMP " not in out and b"Secret" not in out


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_bmp_round_trip_and_copy(tmp_path: Path, channels: int) -> None:
    pixels = pattern(channels=channels)
    src = tmp_path / "a.bmp"
    if channels == 4:  # Pillow writes RGBA BMPs it reads back as RGB: make the source with OpenCV
        src.write_bytes(cv2.imencode(".bmp", cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA))[1].tobytes())
        pixels = np.asarray(Image.open(src))
    else:
        Image.fromarray(pixels).save(src)
    pic = read_picture(src)
    assert pic.format == "BMP" and pic.pixels.shape == pixels.shape
    changed = pic.pixels.copy()
    changed[:5] = 7
    write_picture(pic, changed, tmp_path / "out.bmp")
    np.testing.assert_array_equal(decoded(tmp_path / "out.bmp"), changed)
    assert copy_stripped(pic, tmp_path / "copy.bmp") == "copied"
    assert (tmp_path / "copy.bmp").read_bytes() == src.read_bytes()


def test_tiff_round_trip_keeps_compression_and_drops_tags(tmp_path: Path) -> None:
    src = tmp_path / "a.tif"
    tags = {270: "SecretDescription", 271: "SecretMake", 315: "SecretArtist", 0x0112: 3}
    Image.fromarray(pattern()).save(src, compression="tiff_lzw", tiffinfo=tags, icc_profile=SRGB_ICC)
    pic = read_picture(src)
    assert pic.format == "TIFF" and pic.oriented
    np.testing.assert_array_equal(pic.pixels, pattern()[::-1, ::-1])
    for name in ("out.tif", "copy.tif"):
        dest = tmp_path / name
        if name == "out.tif":
            write_picture(pic, pic.pixels, dest)
        else:
            assert copy_stripped(pic, dest) == "reencoded"
        assert b"Secret" not in dest.read_bytes()
        with Image.open(dest) as im:
            assert im.info["compression"] == "tiff_lzw"
            assert im.info["icc_profile"] == SRGB_ICC
            assert 0x0112 not in im.tag_v2
        np.testing.assert_array_equal(decoded(dest), pic.pixels)


def test_sixteen_bit_tiff_round_trips(tmp_path: Path) -> None:
    rgb = pattern(20, 30, dtype=np.uint16)
    buf = cv2.imencode(".tiff", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1]
    src = tmp_path / "c16.tif"
    src.write_bytes(buf.tobytes())
    pic = read_picture(src)
    np.testing.assert_array_equal(pic.pixels, rgb)
    rotated = tmp_path / "c16-rotated.tif"
    rotated.write_bytes(tiff_rgb16(rgb, orientation=6))
    pic6 = read_picture(rotated)
    assert pic6.oriented
    np.testing.assert_array_equal(pic6.pixels, np.rot90(rgb, -1))
    write_picture(pic, pic.pixels, tmp_path / "out.tif")
    np.testing.assert_array_equal(decoded(tmp_path / "out.tif"), rgb)
    grey = pattern(20, 30, channels=1, dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.tif")
    pic = read_picture(tmp_path / "g16.tif")
    assert pic.pixels.dtype == np.uint16
    write_picture(pic, pic.pixels, tmp_path / "g-out.tif")
    np.testing.assert_array_equal(decoded(tmp_path / "g-out.tif"), grey)


def test_heic_round_trip_and_copy(tmp_path: Path) -> None:
    src = tmp_path / "photo.heic"
    exif = Image.Exif()
    exif[0x010F] = "SecretMake"
    Image.fromarray(pattern(64, 96)).save(src, format="HEIF", quality=85, exif=exif.tobytes(), xmp=XMP)
    assert b"SecretMake" in src.read_bytes()
    pic = read_picture(src)
    assert pic.format == "HEIF" and pic.pixels.shape == (64, 96, 3)
    assert np.abs(pic.pixels.astype(int) - pattern(64, 96)).mean() < 4.0
    out = tmp_path / "out.heic"
    write_picture(pic, pic.pixels, out)
    assert b"SecretMake" not in out.read_bytes() and b"xmpmeta" not in out.read_bytes()
    assert np.abs(decoded(out).astype(int) - pic.pixels).mean() < 4.0
    copy = tmp_path / "copy.heic"
    assert copy_stripped(pic, copy) == "reencoded"
    assert b"SecretMake" not in copy.read_bytes() and b"xmpmeta" not in copy.read_bytes()
    np.testing.assert_array_equal(decoded(copy), pic.pixels)


# --- names, atomicity ----------------------------------------------------------------------------


def test_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    folder = tmp_path / "dossier été"
    folder.mkdir()
    src = folder / "photo d'écran 1 - 日本.jpg"
    src.write_bytes(encode_jpeg(pattern()))
    pic = read_picture(src)
    assert pic.path == src
    dest = tmp_path / "sortie ñ" / "sous dossier" / "copie 日本.jpg"
    assert copy_stripped(pic, dest) == "copied"
    write_picture(pic, pic.pixels, dest.with_name("écrit 1.jpg"))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copie 日本.jpg", "écrit 1.jpg"]


def test_atomic_path_cleans_up_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "out.png"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(".") and tmp.suffix == ".png"
        tmp.write_bytes(b"partial")
        raise RuntimeError("encoder failed")
    assert list(dest.parent.iterdir()) == []
    atomic_write_bytes(dest, b"old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half-new")
        raise RuntimeError("encoder failed")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == ["out.png"]


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "f.bin"
    atomic_write_bytes(dest, b"one")
    atomic_write_bytes(dest, b"two")
    assert dest.read_bytes() == b"two"
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]
    with atomic_path(dest.with_name("x" * 250 + ".jpg")) as tmp:
        tmp.write_bytes(b"long name")
    assert (dest.parent / ("x" * 250 + ".jpg")).read_bytes() == b"long name"


def test_failed_encode_is_an_input_error_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(pattern()).save(src)
    pic = read_picture(src)
    pic.format = "NOPE"
    with pytest.raises(ValueError, match="cannot write NOPE"):
        write_picture(pic, pic.pixels, tmp_path / "out" / "a.png")
    jpeg = Picture(src, "JPEG", pattern(), False)
    with pytest.raises(ValueError, match="alpha"):
        write_picture(jpeg, pattern(channels=4), tmp_path / "out.jpg")
    with pytest.raises(InputError, match="cannot write the JPEG output"):
        write_picture(jpeg, np.zeros((70000, 1, 3), np.uint8), tmp_path / "out.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
