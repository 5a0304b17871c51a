"""Ground-truth face sets in the three common formats: WIDER FACE txt, Pascal VOC xml, COCO json."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceveil.errors import UsageError

DIFFICULTIES = ("easy", "medium", "hard")


@dataclass
class GroundTruth:
    """Faces of one image: ``boxes`` (N, 4) as x, y, w, h; ``ignore`` marks faces that count neither way."""

    path: Path
    name: str
    boxes: np.ndarray
    ignore: np.ndarray


@dataclass
class Dataset:
    """A face set: where it came from, its format, and each image's ground truth."""

    root: Path
    format: str
    images: list[GroundTruth] = field(default_factory=list)
    difficulty: str | None = None

    @property
    def face_count(self) -> int:
        return int(sum((~gt.ignore).sum() for gt in self.images))


def load_dataset(root: Path, difficulty: str | None = None) -> Dataset:
    """Detect the annotation format under ``root`` and load it (WIDER sets default to ``hard``)."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    wider = sorted(root.glob("wider_face_*_bbx_gt.txt"))
    if wider:
        return _load_wider(root, wider[0], difficulty or "hard")
    coco = sorted(p for p in root.glob("*.json") if _looks_like_coco(p))
    if coco:
        return _load_coco(root, coco[0])
    if (root / "annotations").is_dir() and any((root / "annotations").glob("*.xml")):
        return _load_voc(root)
    raise UsageError(
        f"{root}: no ground truth found (expected wider_face_*_bbx_gt.txt, a COCO .json or annotations/*.xml)"
    )


def _looks_like_coco(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"info"' in head


def _image_dir(root: Path) -> Path:
    return root / "images" if (root / "images").is_dir() else root


def _load_wider(root: Path, txt: Path, difficulty: str) -> Dataset:
    if difficulty not in DIFFICULTIES:
        raise UsageError(f"unknown WIDER difficulty {difficulty!r}: choose easy, medium or hard")
    membership = _wider_membership(root / "difficulty.csv", difficulty)
    images_dir = _image_dir(root)
    data = Dataset(root, "wider", difficulty=difficulty)
    lines = txt.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError) as exc:
            raise UsageError(f"{txt}:{i + 2}: expected a face count after {name!r}") from exc
        rows = lines[i + 2 : i + 2 + max(count, 1)]
        boxes, ignore = [], []
        for j, row in enumerate(rows[:count] if count else []):
            vals = row.split()
            if len(vals) < 4:
                raise UsageError(f"{txt}:{i + 3 + j}: expected 'x y w h ...', got {row!r}")
            x, y, w, h = (float(v) for v in vals[:4])
            invalid = len(vals) > 7 and vals[7] == "1"
            counted = membership.get((name, j + 1), True) if membership else True
            boxes.append((x, y, w, h))
            ignore.append(invalid or w <= 0 or h <= 0 or not counted)
        data.images.append(_gt(images_dir / name, name, boxes, ignore, txt))
        i += 2 + max(count, 1)
    return data


def _wider_membership(path: Path, difficulty: str) -> dict[tuple[str, int], bool]:
    """(file, 1-based face index) → counts in the difficulty set; empty when no split is given."""
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        return {(r["file"], int(r["face_index"])): r[difficulty] == "1" for r in csv.DictReader(fh)}


def _load_voc(root: Path) -> Dataset:
    images_dir = _image_dir(root)
    data = Dataset(root, "voc")
    for xml in sorted((root / "annotations").glob("*.xml")):
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise UsageError(f"{xml}: not valid XML ({exc})") from exc
        filename = tree.findtext("filename") or xml.with_suffix(".png").name
        boxes, ignore = [], []
        for obj in tree.iter("object"):
            bb = obj.find("bndbox")
            if bb is None:
                raise UsageError(f"{xml}: an <object> has no <bndbox>")
            try:
                x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError as exc:
                raise UsageError(f"{xml}: a <bndbox> value is not a number") from exc
            boxes.append((x0, y0, x1 - x0, y1 - y0))
            ignore.append(obj.findtext("difficult", "0").strip() == "1")
        data.images.append(_gt(images_dir / filename, filename, boxes, ignore, xml))
    return data


def _load_coco(root: Path, path: Path) -> Dataset:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno})") from exc
    images_dir = _image_dir(root)
    data = Dataset(root, "coco")
    by_image: dict[int, list[dict]] = {}
    for ann in doc.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    for img in doc.get("images", []):
        anns = by_image.get(img["id"], [])
        boxes = [tuple(float(v) for v in a["bbox"]) for a in anns]
        ignore = [bool(a.get("ignore", 0)) or bool(a.get("iscrowd", 0)) for a in anns]
        data.images.append(_gt(images_dir / img["file_name"], img["file_name"], boxes, ignore, path))
    return data


def _gt(path: Path, name: str, boxes: list, ignore: list, source: Path) -> GroundTruth:
    if not path.is_file():
        raise UsageError(f"{source}: lists {name!r}, but {path} does not exist")
    return GroundTruth(
        path=path,
        name=name,
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        ignore=np.asarray(ignore, bool).reshape(-1),
    )
