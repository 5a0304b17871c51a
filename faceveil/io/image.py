"""Read images as displayed, and write them back in their own format without identifying metadata."""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageCms, JpegImagePlugin, UnidentifiedImageError

from faceveil.errors import InputError
from faceveil.io.atomic import atomic_path, atomic_write_bytes

pillow_heif.register_heif_opener()

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
)
DEFAULT_MAX_PIXELS = 178_956_970
DEFAULT_QUALITY = 90

_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "HEIF"})
_SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF"})
_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_TIFF_LOSSLESS = frozenset(
    {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits", "lzma", "zstd"}
)
_TIFF_FALLBACK = "tiff_adobe_deflate"
_CV2_TIFF_COMPRESSION = {"raw": 1, "tiff_lzw": 5, "tiff_adobe_deflate": 8, "packbits": 32773}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG chunks kept by copy_stripped: layout, then colour; everything else (text, eXIf, tIME, private) goes.
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"sBIT", b"pHYs", b"bKGD"}) | frozenset(
    {b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"hIST", b"cICP", b"mDCV", b"cLLI"}
)
_WEBP_KEEP = frozenset({b"VP8X", b"ICCP", b"ALPH", b"VP8 ", b"VP8L"})
_WEBP_FLAG_EXIF = 0x08
_WEBP_FLAG_XMP = 0x04
# In entropy-coded JPEG data a real marker is 0xFF followed by anything but 0x00 (stuffing),
# RST0-7 or another 0xFF (fill).
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


@dataclass(frozen=True)
class _Encoding:
    """How the source was encoded: what is needed to write it back faithfully."""

    orientation: int = 1
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    qtables: dict[int, list[int]] | None = None
    subsampling: int = -1
    progressive: bool = False
    lossless: bool = False
    compression: str | None = None


@dataclass(eq=False)
class Picture:
    """A decoded image as displayed, plus what is needed to write it back in its own format.

    ``pixels`` is uint8 or uint16, shaped (H, W), (H, W, 3) RGB or (H, W, 4) RGBA, with the EXIF
    orientation already applied; ``oriented`` says whether that rotated or flipped anything.
    """

    path: Path
    format: str
    pixels: np.ndarray
    oriented: bool
    _source: bytes = field(default=b"", repr=False)
    _encoding: _Encoding = field(default_factory=_Encoding, repr=False)

    @property
    def width(self) -> int:
        """Width in pixels, as displayed."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels, as displayed."""
        return int(self.pixels.shape[0])

    def rgb8(self) -> np.ndarray:
        """The pixels as (H, W, 3) uint8 RGB for face detectors.

        16-bit is scaled down, grey expanded, alpha dropped. May share memory with ``pixels``: do not modify.
        """
        px = self.pixels
        if px.dtype == np.uint16:
            px = (px >> 8).astype(np.uint8)
        if px.ndim == 2:
            return cv2.cvtColor(px, cv2.COLOR_GRAY2RGB)
        if px.shape[2] == 4:
            return cv2.cvtColor(px, cv2.COLOR_RGBA2RGB)
        return px


def is_image_path(path: Path) -> bool:
    """Whether ``path`` has one of the image suffixes this module reads (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_picture(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode ``path`` fully, as displayed; any problem with the file raises :class:`InputError`.

    The pixel count from the header is checked against ``max_pixels`` before anything is decoded
    (Pillow's own decompression-bomb limit, twice ``Image.MAX_IMAGE_PIXELS``, applies as well).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from exc
    if not data:
        raise InputError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Decoder warnings (bomb size, odd EXIF) are not actionable: real problems raise below.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return _decode(path, data, im, max_pixels)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found[1]} pixels" if found else "too many pixels"
        limit = max_pixels if Image.MAX_IMAGE_PIXELS is None else min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)
        raise InputError(f"image too large: {size} (limit {limit})") from exc
    except UnidentifiedImageError as exc:
        raise InputError("not an image, or an image format that cannot be read") from exc
    except MemoryError as exc:
        raise InputError("not enough memory to decode the image") from exc
    except Exception as exc:
        raise InputError(f"corrupt or truncated image data ({_reason(exc)})") from exc


def write_picture(picture: Picture, pixels: np.ndarray, dest: Path, quality: int | None = None) -> None:
    """Write ``pixels`` (displayed orientation) to ``dest`` atomically, in the source's format.

    Only the ICC profile and resolution are carried over: no EXIF, XMP, IPTC, comments or text.
    JPEG keeps the source's quantization tables and subsampling unless ``quality`` is given.
    """
    _write(picture, pixels, Path(dest), quality, exact=False)


def copy_stripped(picture: Picture, dest: Path) -> Literal["copied", "reencoded"]:
    """Write a face-free picture to ``dest`` atomically with identifying metadata removed.

    JPEG, PNG and WebP keep their compressed pixel data byte for byte (only metadata segments or
    chunks are dropped; an orientation other than 1 is kept as an orientation-only EXIF) and BMP is
    copied as is: "copied". TIFF and HEIF are re-encoded losslessly from the decoded pixels, so they
    decode to the same pixels but are not byte copies: "reencoded".
    """
    dest = Path(dest)
    strip = _STRIPPERS.get(picture.format)
    if strip is not None and picture._source:
        try:
            data = strip(picture._source, picture._encoding.orientation)
        except ValueError:
            data = None
        if data is not None:
            atomic_write_bytes(dest, data)
            return "copied"
    _write(picture, picture.pixels, dest, None, exact=True)
    return "reencoded"


# --- reading -------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A short one-line reason for an unexpected exception."""
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "") or type(exc).__name__


def _decode(path: Path, data: bytes, im: Image.Image, max_pixels: int) -> Picture:
    """Check an opened image (format, size, frames), decode it fully and build the Picture."""
    fmt = "JPEG" if im.format == "MPO" else im.format
    if fmt not in _FORMATS:
        raise InputError(f"{im.format or 'this'} images are not supported")
    width, height = im.size
    if width * height > max_pixels:
        raise InputError(f"image too large: {width}x{height} = {width * height} pixels (limit {max_pixels})")
    # MPO extra images (stereo pair, gain map) are never written: outputs hold the first image only.
    frames = getattr(im, "n_frames", 1)
    if frames > 1 and im.format != "MPO":
        raise InputError(f"has {frames} frames; animated/multi-page images are not supported")
    tiff_orientation = im.tag_v2.get(_ORIENTATION) if fmt == "TIFF" else None
    im.load()
    orientation = _read_orientation(im, tiff_orientation)
    sixteen_bit_colour = _is_sixteen_bit_colour(im, data, fmt)
    pixels = _decode_sixteen_bit_colour(data) if sixteen_bit_colour else _to_array(im)
    rotation = _rotation_left(im, fmt, orientation, sixteen_bit_colour)
    pixels = _apply_orientation(pixels, rotation)
    jpeg = fmt == "JPEG"
    encoding = _Encoding(
        orientation=rotation,
        icc_profile=im.info.get("icc_profile") or None,
        dpi=_read_dpi(im),
        qtables={k: list(v) for k, v in im.quantization.items()} if jpeg else None,
        subsampling=JpegImagePlugin.get_sampling(im) if jpeg else -1,
        progressive=bool(im.info.get("progressive")) if jpeg else False,
        lossless=fmt == "WEBP" and _webp_is_lossless(data),
        compression=im.info.get("compression") if fmt == "TIFF" else None,
    )
    return Picture(path, fmt, pixels, orientation != 1, _source=data, _encoding=encoding)


def _read_orientation(im: Image.Image, tiff_orientation: object) -> int:
    """The EXIF (or XMP) orientation, 1 to 8; 1 when absent or unreadable."""
    if im.format == "HEIF":
        value = im.info.get("original_orientation")
    elif im.format == "TIFF":
        value = tiff_orientation
    else:
        try:
            value = im.getexif().get(_ORIENTATION)
        except Exception:
            value = None
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _read_dpi(im: Image.Image) -> tuple[float, float] | None:
    """The resolution, when the source states a sensible one."""
    dpi = im.info.get("dpi")
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _is_sixteen_bit_colour(im: Image.Image, data: bytes, fmt: str) -> bool:
    """Whether the source is 16-bit colour, which Pillow would reduce to 8 bits."""
    if fmt == "PNG":
        return len(data) > 25 and data[24] == 16 and data[25] in (2, 4, 6)
    if fmt == "TIFF" and im.mode in ("RGB", "RGBA"):
        bits = im.tag_v2.get(258)
        return 16 in (bits if isinstance(bits, tuple) else (bits,))
    return False


def _rotation_left(im: Image.Image, fmt: str, orientation: int, by_opencv: bool) -> int:
    """How much of ``orientation`` the decoder has not already applied to the pixels."""
    if fmt == "HEIF":
        return 1  # libheif applies the container's rotation; EXIF orientation is informational there
    if fmt == "TIFF" and (by_opencv or _ORIENTATION not in im.tag_v2):
        return 1  # OpenCV's TIFF decoder and Pillow >= 11 (which then drops the tag) rotate while decoding
    return orientation


def _decode_sixteen_bit_colour(data: bytes) -> np.ndarray:
    """16-bit RGB(A) PNG or TIFF through OpenCV, which Pillow would reduce to 8 bits."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError("cannot decode the 16-bit colour image")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)


def _to_array(im: Image.Image) -> np.ndarray:
    """Pixels in the module's convention: uint8/uint16, grey (H, W), RGB or RGBA; CMYK made RGB."""
    mode = im.mode
    if mode.startswith("I;16") and mode != "I;16S":
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError("32-bit integer pixels are not supported")
        return arr.astype(np.uint16)
    if mode in ("F", "I;16S"):
        raise InputError(f"pixel format {mode} is not supported")
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if mode == "1":
        return np.array(im.convert("L"))
    if mode in ("L", "RGB", "RGBA") and "transparency" not in im.info:
        return np.array(im)
    alpha = mode in _ALPHA_MODES or "transparency" in im.info
    return np.array(im.convert("RGBA" if alpha else "RGB"))


def _cmyk_to_rgb(im: Image.Image) -> np.ndarray:
    """CMYK to sRGB through the embedded profile when there is one, else Pillow's plain formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return np.array(ImageCms.profileToProfile(im, source, _SRGB, outputMode="RGB"))
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return np.array(im.convert("RGB"))


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip decoded pixels as EXIF orientation 1-8 says, giving a writable C-contiguous array."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation, lambda a: a)(pixels)
    out = np.ascontiguousarray(turned)
    return out if out.flags.writeable else out.copy()


def _webp_is_lossless(data: bytes) -> bool:
    """Whether a WebP file's image data is VP8L (lossless)."""
    return any(fourcc == b"VP8L" for fourcc, _ in _riff_chunks(data))


# --- writing -------------------------------------------------------------------------------------


def _check_pixels(fmt: str, pixels: np.ndarray) -> np.ndarray:
    """Refuse pixel arrays the format cannot hold (a programming error, not a bad input)."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError("pixels must be a uint8 or uint16 numpy array")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ValueError(f"pixels must be shaped (H, W), (H, W, 3) or (H, W, 4), not {pixels.shape}")
    if pixels.dtype == np.uint16 and fmt not in _SIXTEEN_BIT_FORMATS:
        raise ValueError(f"{fmt} cannot store 16-bit pixels")
    if fmt == "JPEG" and pixels.ndim == 3 and pixels.shape[2] == 4:
        raise ValueError("JPEG cannot store an alpha channel")
    return np.ascontiguousarray(pixels)


def _write(picture: Picture, pixels: np.ndarray, dest: Path, quality: int | None, exact: bool) -> None:
    """Encode with the source format's writer; ``exact`` asks for a lossless encoding where possible."""
    pixels = _check_pixels(picture.format, pixels)
    writer = _WRITERS.get(picture.format)
    if writer is None:
        raise ValueError(f"cannot write {picture.format} images")
    try:
        writer(picture._encoding, pixels, dest, quality, exact)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot write the {picture.format} output ({_reason(exc)})") from exc


def _icc_for(pixels: np.ndarray, icc: bytes | None) -> bytes | None:
    """The ICC profile, only if its colour space fits the pixels (a CMYK or grey profile on RGB does not)."""
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if space == (b"GRAY" if pixels.ndim == 2 else b"RGB ") else None


def _pil_params(enc: _Encoding, pixels: np.ndarray) -> dict[str, Any]:
    """Colour profile and resolution, the only metadata ever written."""
    params: dict[str, Any] = {}
    if icc := _icc_for(pixels, enc.icc_profile):
        params["icc_profile"] = icc
    if enc.dpi:
        params["dpi"] = enc.dpi
    return params


def _save_pil(pixels: np.ndarray, dest: Path, fmt: str, params: dict[str, Any]) -> None:
    """Save through Pillow from a fresh image, so nothing from the source's info can leak in."""
    image = Image.fromarray(pixels)
    with atomic_path(dest) as tmp:
        image.save(tmp, format=fmt, **params)


def _write_jpeg(enc: _Encoding, pixels: np.ndarray, dest: Path, quality: int | None, exact: bool) -> None:
    """JPEG with the source's quantization tables and subsampling, or ``quality`` when given."""
    params = _pil_params(enc, pixels)
    if quality is not None:
        params["quality"] = quality
    elif enc.qtables:
        params["qtables"] = enc.qtables
    else:
        params["quality"] = DEFAULT_QUALITY
    if enc.subsampling >= 0 and pixels.ndim == 3:
        params["subsampling"] = enc.subsampling
    if enc.progressive:
        params["progressive"] = True
    _save_pil(pixels, dest, "JPEG", params)


def _write_png(enc: _Encoding, pixels: np.ndarray, dest: Path, quality: int | None, exact: bool) -> None:
    """PNG, keeping alpha and 16-bit depth (16-bit colour goes through OpenCV, Pillow cannot write it)."""
    if not (pixels.dtype == np.uint16 and pixels.ndim == 3):
        _save_pil(pixels, dest, "PNG", _pil_params(enc, pixels))
        return
    code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    ok, buf = cv2.imencode(".png", cv2.cvtColor(pixels, code))
    if not ok:
        raise InputError("cannot encode the 16-bit PNG output")
    extra = []
    if icc := _icc_for(pixels, enc.icc_profile):
        extra.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if enc.dpi:
        extra.append(_png_chunk(b"pHYs", struct.pack(">IIB", *(round(d / 0.0254) for d in enc.dpi), 1)))
    data = buf.tobytes()
    ihdr_end = len(_PNG_SIGNATURE) + 25
    atomic_write_bytes(dest, data[:ihdr_end] + b"".join(extra) + data[ihdr_end:])


def _write_webp(enc: _Encoding, pixels: np.ndarray, dest: Path, quality: int | None, exact: bool) -> None:
    """WebP: lossless (keeping RGB under transparent pixels) if the source was, else lossy."""
    params = _pil_params(enc, pixels)
    params.pop("dpi", None)
    if exact or enc.lossless:
        params.update(lossless=True, exact=True)
    else:
        params["quality"] = DEFAULT_QUALITY if quality is None else quality
    _save_pil(pixels, dest, "WEBP", params)


def _write_bmp(enc: _Encoding, pixels: np.ndarray, dest: Path, quality: int | None, exact: bool) -> None:
    """Plain BMP; RGBA as a 32-bit BITMAPV4 file with an alpha mask (Pillow would drop the alpha)."""
    if pixels.ndim == 2 or pixels.shape[2] == 3:
        _save_pil(pixels, dest, "BMP", {"dpi": enc.dpi} if enc.dpi else {})
        return
    height, width = pixels.shape[:2]
    rows = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)[::-1].tobytes()
    ppm = [round(d / 0.0254) for d in enc.dpi] if enc.dpi else [2835, 2835]
    info = struct.pack("<IiiHHIIiiII", 108, width, height, 1, 32, 3, len(rows), *ppm, 0, 0)
    info += struct.pack("<4I", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
    info += b"BGRs" + bytes(48)  # colour space LCS_sRGB, no end points or gamma
    offset = 14 + len(info)
    atomic_write_bytes(dest, struct.pack("<2sIHHI", b"BM", offset + len(rows), 0, 0, offset) + info + rows)


def _write_tiff(enc: _Encoding, pixels: np.ndarray, dest: Path, quality: int | None, exact: bool) -> None:
    """TIFF in the source's compression if writable (and lossless when ``exact``), else deflate."""
    compression = enc.compression or "raw"
    lossy_ok = compression == "jpeg" and not exact and pixels.dtype == np.uint8
    if compression not in _TIFF_LOSSLESS and not lossy_ok:
        compression = _TIFF_FALLBACK
    if pixels.dtype == np.uint16 and pixels.ndim == 3:
        code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        flags = [cv2.IMWRITE_TIFF_COMPRESSION, _CV2_TIFF_COMPRESSION.get(compression, 8)]
        if enc.dpi:
            x_dpi, y_dpi = (round(d) for d in enc.dpi)
            flags += [cv2.IMWRITE_TIFF_RESUNIT, 2, cv2.IMWRITE_TIFF_XDPI, x_dpi, cv2.IMWRITE_TIFF_YDPI, y_dpi]
        ok, buf = cv2.imencode(".tiff", cv2.cvtColor(pixels, code), flags)
        if not ok:
            raise InputError("cannot encode the 16-bit TIFF output")
        atomic_write_bytes(dest, buf.tobytes())
        return
    params = _pil_params(enc, pixels)
    if compression != "raw":
        params["compression"] = compression
    if lossy_ok:
        params["quality"] = DEFAULT_QUALITY if quality is None else quality
    image = Image.fromarray(pixels)
    with atomic_path(dest) as tmp:
        try:
            image.save(tmp, format="TIFF", **params)
        except (OSError, ValueError, KeyError):
            params.pop("quality", None)
            image.save(tmp, format="TIFF", **{**params, "compression": _TIFF_FALLBACK})


def _write_heif(enc: _Encoding, pixels: np.ndarray, dest: Path, quality: int | None, exact: bool) -> None:
    """HEIF (HEVC); ``exact`` encodes losslessly as 4:4:4 RGB so decoding gives the same pixels."""
    params = _pil_params(enc, pixels)
    params.pop("dpi", None)
    if exact:
        params.update(quality=-1, chroma=444, matrix_coefficients=0)
    else:
        params["quality"] = DEFAULT_QUALITY if quality is None else quality
    _save_pil(pixels, dest, "HEIF", params)


_Writer = Callable[[_Encoding, np.ndarray, Path, int | None, bool], None]
_WRITERS: dict[str, _Writer] = {
    "JPEG": _write_jpeg,
    "PNG": _write_png,
    "WEBP": _write_webp,
    "BMP": _write_bmp,
    "TIFF": _write_tiff,
    "HEIF": _write_heif,
}


# --- stripping metadata without re-encoding ------------------------------------------------------


def _orientation_tiff(orientation: int) -> bytes:
    """A big-endian TIFF structure holding one IFD with the Orientation tag and nothing else."""
    entry = struct.pack(">HHIHH", _ORIENTATION, 3, 1, orientation, 0)
    return b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    """One JPEG marker segment."""
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_keeps(marker: int, payload: bytes) -> bool:
    """Whether a segment is needed to decode or colour the image (frame, tables, scans, ICC, Adobe)."""
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return payload.startswith(b"Adobe")
    return 0xC0 <= marker <= 0xDF


def _strip_jpeg(data: bytes, orientation: int) -> bytes:
    """Rebuild a JPEG keeping only JFIF (without thumbnail), ICC, Adobe and decoding segments.

    Entropy-coded data is copied byte for byte; everything after the first EOI (MPO images,
    trailers) is dropped. Raises ValueError if the structure cannot be followed.
    """
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG start marker")
    out = [b"\xff\xd8"]
    exif = _jpeg_segment(0xE1, b"Exif\x00\x00" + _orientation_tiff(orientation)) if orientation != 1 else b""
    pos, size = 2, len(data)
    while True:
        if pos >= size or data[pos] != 0xFF:
            raise ValueError("expected a JPEG marker")
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            raise ValueError("truncated JPEG")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            out.append(bytes((0xFF, marker)))
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > size:
            raise ValueError("bad JPEG segment length")
        payload = data[pos + 2 : pos + length]
        segment = bytes((0xFF, marker)) + data[pos : pos + length]
        pos += length
        jfif = marker == 0xE0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14
        if exif and not jfif:
            out.append(exif)
            exif = b""
        if jfif:
            out.append(_jpeg_segment(0xE0, payload[:12] + b"\x00\x00"))
        elif _jpeg_keeps(marker, payload):
            out.append(segment)
        if marker == 0xDA:
            found = _JPEG_SCAN_END.search(data, pos)
            if found is None:
                raise ValueError("JPEG scan has no end")
            out.append(data[pos : found.start()])
            pos = found.start()


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def _strip_png(data: bytes, orientation: int) -> bytes:
    """Rebuild a PNG from its critical and colour chunks byte for byte (+ orientation-only eXIf if needed)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("no PNG signature")
    out = [_PNG_SIGNATURE]
    exif = _png_chunk(b"eXIf", _orientation_tiff(orientation)) if orientation != 1 else b""
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise ValueError("truncated PNG")
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if ctype == b"IDAT" and exif:
            out.append(exif)
            exif = b""
        if ctype in _PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if ctype == b"IEND":
            return b"".join(out)


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The top-level chunks of a RIFF WebP file; ValueError if it is not one or is cut short."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a RIFF WebP file")
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    chunks, pos = [], 12
    while pos + 8 <= end:
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if pos + 8 + size > end:
            raise ValueError("truncated WebP chunk")
        chunks.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def _strip_webp(data: bytes, orientation: int) -> bytes:
    """Rebuild a WebP without EXIF, XMP or unknown chunks (VP8X flags updated); image chunks copied as is."""
    chunks = [(fourcc, payload) for fourcc, payload in _riff_chunks(data) if fourcc in _WEBP_KEEP]
    if chunks and chunks[0][0] == b"VP8X" and chunks[0][1]:
        header = bytearray(chunks[0][1])
        header[0] &= ~(_WEBP_FLAG_EXIF | _WEBP_FLAG_XMP) & 0xFF
        if orientation != 1:
            header[0] |= _WEBP_FLAG_EXIF
            chunks.append((b"EXIF", _orientation_tiff(orientation)))
        chunks[0] = (b"VP8X", bytes(header))
    elif orientation != 1:
        raise ValueError("a simple WebP file cannot hold an orientation")
    body = b"".join(
        fourcc + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)
        for fourcc, payload in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _copy_bmp(data: bytes, orientation: int) -> bytes:
    """BMP holds no identifying metadata: the bytes are copied unchanged."""
    return data


_STRIPPERS: dict[str, Callable[[bytes, int], bytes]] = {
    "JPEG": _strip_jpeg,
    "PNG": _strip_png,
    "WEBP": _strip_webp,
    "BMP": _copy_bmp,
}
