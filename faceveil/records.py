"""``faces.jsonl`` and ``faces.coco.json``, both written from the journal so they always agree."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from faceveil.io.atomic import atomic_write_bytes
from faceveil.journal import Entry, Journal

JSONL = "faces.jsonl"
COCO = "faces.coco.json"


def jsonl_line(entry: Entry) -> dict[str, Any]:
    """The contract's object for one input, keys in the contract's order."""
    if entry.status == "error":
        return {"path": entry.path, "status": "error", "kind": entry.kind, "error": entry.error}
    if entry.status == "skipped":
        return {"path": entry.path, "status": "skipped", "kind": entry.kind, "reason": entry.error}
    line: dict[str, Any] = {
        "path": entry.path,
        "status": entry.status,
        "kind": entry.kind,
        "width": entry.width,
        "height": entry.height,
        "sha256": entry.sha256,
    }
    if entry.method is not None:
        line["method"] = entry.method
    if entry.written is not None:
        line["written"] = entry.written
    line.update(entry.extra or {})
    line["faces"] = entry.faces or []
    return line


def coco_document(entries: Iterable[Entry]) -> dict[str, Any]:
    """Every region of every image input as a COCO detection file."""
    images, annotations = [], []
    for entry in entries:
        if entry.status != "ok" or entry.kind != "image":
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": entry.path, "width": entry.width, "height": entry.height})
        for face in entry.faces or []:
            x, y, w, h = face["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "score": face["score"],
                    "source": face.get("source", "detector"),
                }
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}


def write_records(journal: Journal, out: Path) -> None:
    """Rewrite both record files from the journal (atomically)."""
    entries = list(journal.entries())
    lines = "".join(json.dumps(jsonl_line(e), ensure_ascii=False) + "\n" for e in entries)
    atomic_write_bytes(Path(out) / JSONL, lines.encode("utf-8"))
    doc = json.dumps(coco_document(entries), ensure_ascii=False, indent=1)
    atomic_write_bytes(Path(out) / COCO, doc.encode("utf-8"))
