"""The crop sheet: a PNG contact sheet of residual finds for a person to look at.

Tiles are laid out left to right, top to bottom, :data:`COLUMNS` per row (fewer when there are fewer
tiles), under a one-line header. Each tile shows the find with a margin around it, framed red when
it lies outside every hidden region (a face the run may have missed) and orange when it lies inside
one (a face still visible through the obfuscation), and is labelled with the file name and score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from faceveil.audit.residual import OUTSIDE
from faceveil.io.atomic import atomic_write_bytes

TILE = 128
"""Side of a tile's picture in pixels."""
LABEL = 30
PAD = 4
HEADER = 38
COLUMNS = 8
MAX_TILES = 200
"""At most this many crops go on a sheet (outside-region finds first, then by score)."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_RED = (220, 30, 30)
_ORANGE = (255, 150, 0)
_BACKGROUND = (24, 24, 24)
_TEXT = (235, 235, 235)


@dataclass(frozen=True)
class SheetTile:
    """One residual find on the sheet: its crop (TILE x TILE RGB), file, score and where it lies."""

    crop: np.ndarray
    path: str
    score: float
    where: str


def layout(count: int) -> tuple[int, int]:
    """``(columns, rows)`` of a sheet with ``count`` tiles (a sheet with none has one empty cell)."""
    cols = max(1, min(COLUMNS, count))
    return cols, max(1, math.ceil(count / cols))


def sheet_size(count: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of a sheet with ``count`` tiles."""
    cols, rows = layout(count)
    width = max(PAD + cols * (TILE + PAD), 420)
    return width, HEADER + PAD + rows * (TILE + LABEL + PAD)


def tile_origin(index: int, count: int) -> tuple[int, int]:
    """Top-left pixel ``(x, y)`` of tile ``index``'s picture."""
    cols, _ = layout(count)
    row, col = divmod(index, cols)
    return PAD + col * (TILE + PAD), HEADER + PAD + row * (TILE + LABEL + PAD)


def _ascii(text: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


def _fit(text: str, width: int, scale: float) -> str:
    """``text`` shortened from the left (keeping the end of a file name) to fit ``width`` pixels."""
    text = _ascii(text)
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width:
        return text
    while text and cv2.getTextSize(".." + text, _FONT, scale, 1)[0][0] > width:
        text = text[1:]
    return ".." + text


def render(tiles: Sequence[SheetTile], header: str) -> np.ndarray:
    """The sheet as an RGB image."""
    width, height = sheet_size(len(tiles))
    sheet = np.full((height, width, 3), _BACKGROUND, np.uint8)
    cv2.putText(sheet, _fit(header, width - 2 * PAD, 0.42), (PAD, 15), _FONT, 0.42, _TEXT, 1, cv2.LINE_AA)
    red = "red: outside every region (missed?)"
    cv2.putText(sheet, red, (PAD, 31), _FONT, 0.38, _RED, 1, cv2.LINE_AA)
    x = PAD + cv2.getTextSize(red + "  ", _FONT, 0.38, 1)[0][0]
    cv2.putText(sheet, "orange: inside a region", (x, 31), _FONT, 0.38, _ORANGE, 1, cv2.LINE_AA)
    if not tiles:
        cv2.putText(sheet, "no residual faces found", (PAD, HEADER + 40), _FONT, 0.5, _TEXT, 1, cv2.LINE_AA)
    for i, tile in enumerate(tiles):
        x, y = tile_origin(i, len(tiles))
        crop = tile.crop
        if crop.shape[:2] != (TILE, TILE):
            crop = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA)
        sheet[y : y + TILE, x : x + TILE] = crop[:, :, :3]
        colour = _RED if tile.where == OUTSIDE else _ORANGE
        cv2.rectangle(sheet, (x, y), (x + TILE - 1, y + TILE - 1), colour, 2)
        name = _fit(tile.path, TILE, 0.33)
        kind = "missed?" if tile.where == OUTSIDE else "in region"
        cv2.putText(sheet, name, (x, y + TILE + 12), _FONT, 0.33, _TEXT, 1, cv2.LINE_AA)
        cv2.putText(
            sheet, f"{tile.score:.2f} {kind}", (x, y + TILE + 25), _FONT, 0.33, colour, 1, cv2.LINE_AA
        )
    return sheet


def write_sheet(path: Path, tiles: Sequence[SheetTile], header: str) -> None:
    """Render and write the sheet as a PNG, atomically."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(render(tiles, header), cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - PNG encoding of a plain uint8 image does not fail
        raise OSError("PNG encoding failed")
    atomic_write_bytes(Path(path), data.tobytes())
