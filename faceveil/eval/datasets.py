"""Ground-truth face sets in the three common formats: WIDER FACE txt, Pascal VOC xml, COCO json.

Every problem in the annotations is a :class:`UsageError` that names the file and, where the format
has lines, the line: a folder in none of the formats, a malformed line, a box outside its image
(more than ``EDGE_TOLERANCE`` px; up to that it is clipped and noted in ``Dataset.warnings``), an
image that is listed but missing.
"""

from __future__ import annotations

import csv
import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceveil.errors import MissingExtraError, UsageError

DIFFICULTIES = ("easy", "medium", "hard")
ALL = "all"
"""The name of the one set of a dataset without a difficulty split."""
EDGE_TOLERANCE = 1.0
"""Boxes may overrun the image by this many pixels (a common off-by-one); they are clipped."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif")
_OFFICIAL_MATS = {d: f"wider_{d}_val.mat" for d in DIFFICULTIES}


@dataclass
class GroundTruth:
    """Faces of one image: ``boxes`` (N, 4) as x, y, w, h; ``ignore`` marks faces that count neither way.

    ``ignore_by_set`` holds the ignore mask of every set the dataset defines (``easy``, ``medium`` and
    ``hard`` for WIDER FACE with its split, else ``all``); ``ignore`` is the one of the chosen set.
    ``width`` and ``height`` are the image's displayed size.
    """

    path: Path
    name: str
    boxes: np.ndarray
    ignore: np.ndarray
    ignore_by_set: dict[str, np.ndarray] = field(default_factory=dict)
    width: int = 0
    height: int = 0


@dataclass
class Dataset:
    """A face set: where it came from, its format, and each image's ground truth."""

    root: Path
    format: str
    images: list[GroundTruth] = field(default_factory=list)
    difficulty: str | None = None
    sets: tuple[str, ...] = (ALL,)
    annotations: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def face_count(self) -> int:
        return int(sum((~gt.ignore).sum() for gt in self.images))

    def faces_in(self, name: str) -> int:
        """Faces that count in set ``name``."""
        return int(sum((~gt.ignore_by_set[name]).sum() for gt in self.images))


def load_dataset(root: Path, difficulty: str | None = None) -> Dataset:
    """Detect the annotation format under ``root`` and load it (WIDER sets default to ``hard``).

    A WIDER FACE set has an easy/medium/hard split when ``difficulty.csv`` or the official
    ``wider_{easy,medium,hard}_val.mat`` files (under ``ground_truth/``) are present; without either,
    every valid face counts and the one set is called ``all``.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    wider = sorted(root.glob("wider_face_*_bbx_gt.txt")) or sorted(
        (root / "wider_face_split").glob("wider_face_*_bbx_gt.txt")
    )
    if wider:
        return _load_wider(root, wider[0], difficulty)
    if difficulty is not None and difficulty != ALL:
        raise UsageError(f"{root}: difficulty {difficulty!r} applies to WIDER FACE sets only")
    coco = sorted(p for p in root.glob("*.json") if _looks_like_coco(p))
    if coco:
        return _load_coco(root, coco[0])
    annotations = _voc_annotations(root)
    if annotations is not None:
        return _load_voc(root, annotations)
    raise UsageError(
        f"{root}: no ground truth found in any known format (expected wider_face_*_bbx_gt.txt (WIDER FACE), "
        "a COCO .json with 'images' and 'annotations', or annotations/*.xml (Pascal VOC))"
    )


def find_wider_mats(root: Path) -> Path | None:
    """The folder with the official WIDER FACE evaluation ``.mat`` files, if the dataset has one."""
    for folder in (root / "ground_truth", root / "eval_tools" / "ground_truth", root):
        if all((folder / name).is_file() for name in (*_OFFICIAL_MATS.values(), "wider_face_val.mat")):
            return folder
    return None


def _looks_like_coco(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            head = fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return '"images"' in head or '"annotations"' in head or '"info"' in head


def _image_dir(root: Path) -> Path:
    for name in ("images", "JPEGImages", "WIDER_val/images"):
        if (root / name).is_dir():
            return root / name
    return root


def _voc_annotations(root: Path) -> Path | None:
    for name in ("annotations", "Annotations"):
        folder = root / name
        if folder.is_dir() and any(folder.glob("*.xml")):
            return folder
    return None


# --- WIDER FACE -------------------------------------------------------------------------------------


def _load_wider(root: Path, txt: Path, difficulty: str | None) -> Dataset:
    if difficulty is not None and difficulty not in (*DIFFICULTIES, ALL):
        raise UsageError(f"unknown WIDER difficulty {difficulty!r}: choose easy, medium, hard or all")
    entries = _parse_wider_txt(txt)
    membership = _wider_membership(root, entries)
    if membership is None:
        if difficulty in DIFFICULTIES:
            raise UsageError(
                f"{root}: no easy/medium/hard split found (difficulty.csv or ground_truth/wider_*_val.mat); "
                "leave out the difficulty to count every valid face"
            )
        sets: tuple[str, ...] = (ALL,)
        chosen = ALL
    else:
        sets = DIFFICULTIES
        chosen = "hard" if difficulty in (None, ALL) else difficulty
    images_dir = _image_dir(root)
    data = Dataset(root, "wider", difficulty=chosen, sets=sets, annotations=txt)
    for entry in entries:
        name, name_line, rows = entry
        boxes = np.asarray([r[1] for r in rows], np.float64).reshape(-1, 4)
        invalid = np.asarray([r[2] for r in rows], bool)
        by_set = {}
        for s in sets:
            counted = (
                np.ones(len(rows), bool)
                if membership is None
                else np.asarray([membership[s].get((name, j + 1), False) for j in range(len(rows))], bool)
            )
            by_set[s] = invalid | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | ~counted
        where = [f"{txt}:{r[0]}" for r in rows]
        data.images.append(
            _gt(images_dir / name, name, boxes, by_set, chosen, f"{txt}:{name_line}", where, data.warnings)
        )
    return data


def _parse_wider_txt(txt: Path) -> list[tuple[str, int, list[tuple[int, tuple[float, ...], bool]]]]:
    """(image name, its line, [(line, box, invalid), ...]) per entry; malformed lines name file:line."""
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{txt}: cannot read the annotation file ({exc})") from exc
    entries = []
    seen: dict[str, int] = {}
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if not _looks_like_image_name(name):
            raise UsageError(f"{txt}:{i + 1}: expected an image path, got {lines[i]!r}")
        if name in seen:
            raise UsageError(f"{txt}:{i + 1}: {name!r} is listed twice (first at line {seen[name]})")
        seen[name] = i + 1
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError) as exc:
            got = repr(lines[i + 1]) if i + 1 < len(lines) else "the end of the file"
            raise UsageError(f"{txt}:{i + 2}: expected the number of faces of {name!r}, got {got}") from exc
        if count < 0:
            raise UsageError(f"{txt}:{i + 2}: negative face count {count}")
        rows = []
        # An entry with 0 faces is followed by one placeholder line ("0 0 0 0 ..."), which some
        # copies leave out.
        placeholder = count == 0 and i + 2 < len(lines) and not _looks_like_image_name(lines[i + 2].strip())
        for j in range(count or int(placeholder)):
            lineno = i + 3 + j
            if lineno > len(lines):
                raise UsageError(
                    f"{txt}:{lineno}: the file ends, but {name!r} (line {i + 1}) announces {count} faces"
                )
            row = lines[lineno - 1]
            box, invalid = _wider_row(txt, lineno, row)
            if count:
                rows.append((lineno, box, invalid))
        entries.append((name, i + 1, rows))
        i += 2 + (count or int(placeholder))
    if not entries:
        raise UsageError(f"{txt}: no images listed")
    return entries


def _looks_like_image_name(text: str) -> bool:
    return text.lower().endswith(IMAGE_SUFFIXES) or ("/" in text and not re.fullmatch(r"[-\d.\s]+", text))


def _wider_row(txt: Path, lineno: int, row: str) -> tuple[tuple[float, ...], bool]:
    vals = row.split()
    if len(vals) < 4:
        raise UsageError(
            f"{txt}:{lineno}: expected 'x y w h blur expression illumination invalid ...', got {row!r}"
        )
    try:
        nums = [float(v) for v in vals]
    except ValueError as exc:
        raise UsageError(f"{txt}:{lineno}: expected numbers 'x y w h ...', got {row!r}") from exc
    if not all(math.isfinite(v) for v in nums[:4]):
        raise UsageError(f"{txt}:{lineno}: box is not finite: {row!r}")
    x, y, w, h = nums[:4]
    if w < 0 or h < 0:
        raise UsageError(f"{txt}:{lineno}: negative box size (w={w:g}, h={h:g})")
    return (x, y, w, h), len(nums) > 7 and nums[7] == 1


def _wider_membership(
    root: Path, entries: list[tuple[str, int, list]]
) -> dict[str, dict[tuple[str, int], bool]] | None:
    """{set: {(file, 1-based face index): counts}} from difficulty.csv or the official .mat files."""
    path = root / "difficulty.csv"
    if path.is_file():
        membership = _membership_csv(path)
        listed = {file for file, _ in membership["hard"]}
        for name, line, rows in entries:
            if rows and name not in listed:
                raise UsageError(f"{path}: has no rows for {name!r} (line {line} of the WIDER txt)")
        return membership
    mats = find_wider_mats(root)
    if mats is not None:
        return _membership_mat(mats, entries)
    return None


def _membership_csv(path: Path) -> dict[str, dict[tuple[str, int], bool]]:
    out: dict[str, dict[tuple[str, int], bool]] = {d: {} for d in DIFFICULTIES}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "face_index", *DIFFICULTIES} - set(reader.fieldnames or ())
        if missing:
            raise UsageError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            try:
                key = (row["file"], int(row["face_index"]))
                for d in DIFFICULTIES:
                    if row[d] not in ("0", "1"):
                        raise ValueError(row[d])
                    out[d][key] = row[d] == "1"
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{path}:{reader.line_num}: malformed row {row!r}") from exc
    return out


def _membership_mat(
    folder: Path, entries: list[tuple[str, int, list]]
) -> dict[str, dict[tuple[str, int], bool]]:
    """Membership from the official ``gt_list`` of wider_{easy,medium,hard}_val.mat (1-based indices)."""
    from faceveil.eval.wider_official import load_gt

    gt = load_gt(folder)
    out: dict[str, dict[tuple[str, int], bool]] = {d: {} for d in DIFFICULTIES}
    for name, line, rows in entries:
        event, _, file = name.rpartition("/")
        stem = file.rsplit(".", 1)[0]
        image = gt.images.get((event, stem))
        if image is None:
            raise UsageError(f"{name} (line {line}) is not in the official ground truth under {folder}")
        if rows and len(image.boxes) != len(rows):
            raise UsageError(
                f"{name} (line {line}): {len(rows)} faces here, "
                f"but {len(image.boxes)} in {folder / 'wider_face_val.mat'}"
            )
        for d in DIFFICULTIES:
            keep = set(image.keep[d].tolist())
            for j in range(len(rows)):
                out[d][(name, j + 1)] = (j + 1) in keep
    return out


# --- Pascal VOC ---------------------------------------------------------------------------------------


def _parse_xml(path: Path) -> tuple[ET.Element, dict[int, int]]:
    """The XML tree, and the line each element starts on (by ``id`` of the element)."""
    from xml.parsers import expat

    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    lines: dict[int, int] = {}

    def start(tag: str, attrs: dict[str, str]) -> None:
        lines[id(builder.start(tag, attrs))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(path.read_bytes(), True)
        root = builder.close()
    except expat.ExpatError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not valid XML ({expat.errors.messages[exc.code]})") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the annotation file ({exc})") from exc
    return root, lines


def _load_voc(root: Path, annotations: Path) -> Dataset:
    images_dir = _image_dir(root)
    data = Dataset(root, "voc", annotations=annotations)
    for xml in sorted(annotations.glob("*.xml")):
        tree, lines = _parse_xml(xml)
        fn_el = tree.find("filename")
        filename = (fn_el.text or "").strip() if fn_el is not None else ""
        name_where = f"{xml}:{lines.get(id(fn_el), 1)}" if fn_el is not None else str(xml)
        filename = _voc_image_name(images_dir, filename, xml)
        boxes, ignore, where = [], [], []
        for obj in tree.iter("object"):
            bb = obj.find("bndbox")
            at = f"{xml}:{lines.get(id(bb if bb is not None else obj), 1)}"
            if bb is None:
                raise UsageError(f"{at}: an <object> has no <bndbox>")
            try:
                x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError as exc:
                raise UsageError(f"{at}: a <bndbox> value is not a number") from exc
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                raise UsageError(f"{at}: <bndbox> needs xmin, ymin, xmax and ymax")
            if x1 < x0 or y1 < y0:
                raise UsageError(
                    f"{at}: <bndbox> has xmax < xmin or ymax < ymin ({x0:g},{y0:g},{x1:g},{y1:g})"
                )
            boxes.append((x0, y0, x1 - x0, y1 - y0))
            ignore.append((obj.findtext("difficult") or "0").strip() == "1")
            where.append(at)
        box_arr = np.asarray(boxes, np.float64).reshape(-1, 4)
        by_set = {ALL: np.asarray(ignore, bool).reshape(-1)}
        data.images.append(
            _gt(images_dir / filename, filename, box_arr, by_set, ALL, name_where, where, data.warnings)
        )
    return data


def _voc_image_name(images_dir: Path, filename: str, xml: Path) -> str:
    """The image an XML describes: its <filename>, else the XML's stem with a known image suffix."""
    if filename and (images_dir / filename).is_file():
        return filename
    stem = Path(filename).stem if filename else xml.stem
    for suffix in IMAGE_SUFFIXES:
        for candidate in (stem + suffix, stem + suffix.upper()):
            if (images_dir / candidate).is_file():
                return candidate
    return filename or xml.with_suffix(".png").name


# --- COCO ---------------------------------------------------------------------------------------------


def _load_coco(root: Path, path: Path) -> Dataset:
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the annotation file ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise UsageError(f"{path}: not a COCO file (no 'images' list)")
    images_dir = _image_dir(root)
    data = Dataset(root, "coco", annotations=path)
    ann_lines = _key_lines(text, "bbox", len(doc.get("annotations", [])))
    img_lines = _key_lines(text, "file_name", len(doc["images"]))
    categories = {
        c.get("id"): str(c.get("name", "")) for c in doc.get("categories", []) if isinstance(c, dict)
    }
    face_ids = {cid for cid, name in categories.items() if "face" in name.lower()}
    by_image: dict[object, list[tuple[int, dict]]] = {}
    for k, ann in enumerate(doc.get("annotations", [])):
        at = f"{path}:{ann_lines[k]}" if ann_lines else f"{path}: annotations[{k}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "bbox" not in ann:
            raise UsageError(f"{at}: an annotation needs 'image_id' and 'bbox'")
        if face_ids and len(categories) > 1 and ann.get("category_id") not in face_ids:
            continue
        by_image.setdefault(ann["image_id"], []).append((k, ann))
    known = set()
    for n, img in enumerate(doc["images"]):
        name_at = f"{path}:{img_lines[n]}" if img_lines else f"{path}: images[{n}]"
        if not isinstance(img, dict) or "file_name" not in img or "id" not in img:
            raise UsageError(f"{name_at}: an image needs 'id' and 'file_name'")
        known.add(img["id"])
        boxes, ignore, where = [], [], []
        for k, ann in by_image.get(img["id"], []):
            at = f"{path}:{ann_lines[k]}" if ann_lines else f"{path}: annotations[{k}] (id {ann.get('id')})"
            try:
                box = tuple(float(v) for v in ann["bbox"])
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{at}: 'bbox' must be [x, y, width, height] numbers") from exc
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise UsageError(f"{at}: 'bbox' must be [x, y, width, height], got {ann['bbox']!r}")
            if box[2] < 0 or box[3] < 0:
                raise UsageError(f"{at}: negative box size {ann['bbox']!r}")
            boxes.append(box)
            ignore.append(bool(ann.get("ignore", 0)) or bool(ann.get("iscrowd", 0)))
            where.append(at)
        box_arr = np.asarray(boxes, np.float64).reshape(-1, 4)
        by_set = {ALL: np.asarray(ignore, bool).reshape(-1)}
        data.images.append(
            _gt(
                images_dir / img["file_name"],
                img["file_name"],
                box_arr,
                by_set,
                ALL,
                name_at,
                where,
                data.warnings,
            )
        )
    orphans = [k for image_id, anns in by_image.items() if image_id not in known for k, _ in anns]
    if orphans:
        k = orphans[0]
        at = f"{path}:{ann_lines[k]}" if ann_lines else f"{path}: annotations[{k}]"
        raise UsageError(
            f"{at}: annotation for image_id {doc['annotations'][k]['image_id']!r}, which is not in 'images'"
        )
    return data


def _key_lines(text: str, key: str, expected: int) -> list[int]:
    """Line of each occurrence of ``"key":`` in order, when there is exactly one per expected item."""
    found = [m.start() for m in re.finditer(rf'"{re.escape(key)}"\s*:', text)]
    if len(found) != expected:
        return []
    starts = np.cumsum([0] + [len(line) + 1 for line in text.split("\n")])
    return [int(np.searchsorted(starts, pos, side="right")) for pos in found]


# --- shared --------------------------------------------------------------------------------------------


def _gt(
    path: Path,
    name: str,
    boxes: np.ndarray,
    ignore_by_set: dict[str, np.ndarray],
    chosen: str,
    listed_at: str,
    where: list[str],
    warnings: list[str],
) -> GroundTruth:
    """One image's ground truth, with the image checked to exist and every box checked against its size."""
    if not path.is_file():
        raise UsageError(f"{listed_at}: lists image {name!r}, but {path} does not exist")
    width, height = image_size(path, listed_at)
    boxes = boxes.copy()
    for i, (x, y, w, h) in enumerate(boxes):
        if w <= 0 or h <= 0:
            continue
        over = max(-x, -y, x + w - width, y + h - height)
        if over > EDGE_TOLERANCE:
            raise UsageError(
                f"{where[i]}: box x={x:g} y={y:g} w={w:g} h={h:g} lies {over:g} px outside the "
                f"{width}x{height} image {name!r} (tolerance {EDGE_TOLERANCE:g} px)"
            )
        if over > 0:
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + w, float(width)), min(y + h, float(height))
            boxes[i] = (x0, y0, x1 - x0, y1 - y0)
            warnings.append(f"{where[i]}: box overruns the {width}x{height} image by {over:g} px; clipped")
    return GroundTruth(
        path=path,
        name=name,
        boxes=boxes.reshape(-1, 4),
        ignore=ignore_by_set[chosen],
        ignore_by_set=ignore_by_set,
        width=width,
        height=height,
    )


def image_size(path: Path, listed_at: str = "") -> tuple[int, int]:
    """Displayed (width, height) of an image from its header (EXIF orientation applied)."""
    from PIL import Image

    import faceveil.io.image  # noqa: F401  (registers the HEIF opener)

    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception as exc:
        prefix = f"{listed_at}: " if listed_at else ""
        raise UsageError(f"{prefix}cannot read image {path}: {exc}") from exc
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return int(width), int(height)


def require_scipy(what: str):  # type: ignore[no-untyped-def]
    """``scipy.io`` or a :class:`MissingExtraError` naming the ``eval`` extra."""
    try:
        import scipy.io
    except ImportError as exc:
        raise MissingExtraError(what, "eval") from exc
    return scipy.io
