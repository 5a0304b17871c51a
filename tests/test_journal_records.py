"""The run journal (SQLite) and the two record files written from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faceveil.journal import Entry, Journal
from faceveil.records import COCO, JSONL, coco_document, jsonl_line, write_records

FACE = {
    "bbox": [412.0, 96.5, 61.0, 77.0],
    "score": 0.91,
    "detector": "yunet",
    "landmarks": [[430.1, 120.3], [455.0, 121.0], [443.2, 135.9], [432.0, 150.2], [452.8, 150.9]],
    "region": {"shape": "ellipse", "bbox": [400.0, 81.0, 85.0, 108.0]},
    "source": "detector",
}
OK_KEYS = ["path", "status", "kind", "width", "height", "sha256", "method", "written", "faces"]


def ok_entry(path: str, faces: list[dict] | None = None, **kw: object) -> Entry:
    values: dict = {
        "sha256": "ab" * 32,
        "fingerprint": "f" * 16,
        "width": 1024,
        "height": 768,
        "method": "blur",
        "written": "reencoded",
        "faces": [FACE] if faces is None else faces,
    }
    values.update(kw)
    kind = str(values.pop("kind", "image"))
    return Entry(path, f"/in/{path}", "ok", kind, **values)


def error_entry(path: str, reason: str = "empty file (0 bytes)") -> Entry:
    return Entry(path, f"/in/{path}", "error", "image", "cd" * 32, "f" * 16, error=reason)


def skipped_entry(path: str) -> Entry:
    return Entry(path, f"/in/{path}", "skipped", "unknown", error="not a supported image type (.txt)")


# --- journal -------------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    entry = ok_entry("sub/IMG 1.jpg", extra={"note": "x"}, reviewed=True)
    with Journal(tmp_path) as journal:
        assert journal.get("sub/IMG 1.jpg") is None
        journal.record(entry)
        assert journal.get("sub/IMG 1.jpg") == entry
    assert (tmp_path / ".faceveil" / "journal.sqlite").is_file()
    with Journal(tmp_path) as journal:  # committed: survives closing and reopening
        assert journal.get("sub/IMG 1.jpg") == entry
        assert journal.get("sub/IMG 2.jpg") is None


def test_record_replaces(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(error_entry("a.jpg"))
        journal.record(ok_entry("a.jpg", faces=[]))
        got = journal.get("a.jpg")
        assert got is not None and got.status == "ok" and got.error is None and got.faces == []
        assert len(list(journal.entries())) == 1


def test_entries_sorted_by_path(tmp_path: Path) -> None:
    paths = [
        "z.jpg",
        "sub dir/été 1.jpg",
        "A.png",
        "sub/b.jpg",
        "sub/a.jpg",
        "a.jpg",
        "été.jpg",
        "sub dir/a.jpg",
    ]
    with Journal(tmp_path) as journal:
        for p in paths:
            journal.record(ok_entry(p))
        listed = [e.path for e in journal.entries()]
    assert listed == sorted(paths)


def test_none_and_empty_values_survive(tmp_path: Path) -> None:
    bare = Entry("x.jpg", "/in/x.jpg", "ok", "image")
    with Journal(tmp_path) as journal:
        journal.record(bare)
        journal.record(ok_entry("y.jpg", faces=[]))
        assert journal.get("x.jpg") == bare
        y = journal.get("y.jpg")
        assert y is not None and y.faces == [] and y.reviewed is False


def test_meta(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        assert journal.get_meta("settings") is None
        journal.set_meta("settings", {"method": "blur", "margin": 0.35})
        journal.set_meta("mode", "run")
        journal.set_meta("mode", "detect")
    with Journal(tmp_path) as journal:
        assert journal.get_meta("settings") == {"method": "blur", "margin": 0.35}
        assert journal.get_meta("mode") == "detect"


# --- records -------------------------------------------------------------------------------------


def test_ok_line_keys_in_contract_order() -> None:
    line = jsonl_line(ok_entry("sub/IMG 1.jpg"))
    assert list(line) == OK_KEYS
    assert list(line["faces"][0]) == ["bbox", "score", "detector", "landmarks", "region", "source"]
    assert line["sha256"] == "ab" * 32 and line["width"] == 1024 and line["height"] == 768


def test_detect_line_has_no_method_or_written() -> None:
    entry = ok_entry("a.jpg", method=None, written=None, faces=[{k: FACE[k] for k in list(FACE)[:4]}])
    line = jsonl_line(entry)
    assert list(line) == ["path", "status", "kind", "width", "height", "sha256", "faces"]
    assert "region" not in line["faces"][0]


def test_video_extra_goes_before_faces() -> None:
    entry = ok_entry("v.mp4", kind="video", extra={"fps": 25.0, "frames": 10, "frames_with_faces": []})
    assert list(jsonl_line(entry))[-4:] == ["fps", "frames", "frames_with_faces", "faces"]


def test_error_line_has_only_path_status_kind_error() -> None:
    line = jsonl_line(error_entry("bad.jpg", "corrupt or truncated image data"))
    assert line == {
        "path": "bad.jpg",
        "status": "error",
        "kind": "image",
        "error": "corrupt or truncated image data",
    }
    assert list(line) == ["path", "status", "kind", "error"]


def test_skipped_line_has_reason() -> None:
    line = jsonl_line(skipped_entry("notes.txt"))
    assert line == {
        "path": "notes.txt",
        "status": "skipped",
        "kind": "unknown",
        "reason": "not a supported image type (.txt)",
    }


def test_coco_document() -> None:
    second = dict(FACE, bbox=[10.0, 20.0, 30.0, 40.0], score=0.5, source="review")
    entries = [
        ok_entry("a.jpg", faces=[FACE, second]),
        error_entry("b.jpg"),
        skipped_entry("c.txt"),
        ok_entry("d.png", faces=[], width=10, height=20),
        ok_entry("e.mp4", kind="video"),
        ok_entry("f.jpg", faces=[FACE]),
    ]
    doc = coco_document(entries)
    assert doc["categories"] == [{"id": 1, "name": "face"}]
    assert doc["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 1024, "height": 768},
        {"id": 2, "file_name": "d.png", "width": 10, "height": 20},
        {"id": 3, "file_name": "f.jpg", "width": 1024, "height": 768},
    ]
    anns = doc["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3]
    assert [a["image_id"] for a in anns] == [1, 1, 3]
    assert anns[0] == {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "bbox": [412.0, 96.5, 61.0, 77.0],
        "area": 4697.0,
        "iscrowd": 0,
        "score": 0.91,
        "source": "detector",
    }
    assert anns[1]["source"] == "review" and anns[1]["area"] == 1200.0


def test_write_records_files_agree(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record(ok_entry("sub dir/été 1.jpg"))
        journal.record(error_entry("bad.jpg"))
        journal.record(skipped_entry("notes.txt"))
        journal.record(ok_entry("a.jpg", faces=[FACE, FACE]))
        write_records(journal, tmp_path)
    raw = (tmp_path / JSONL).read_bytes()
    assert "été".encode() in raw  # UTF-8, not \\u escapes
    lines = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert [line["path"] for line in lines] == ["a.jpg", "bad.jpg", "notes.txt", "sub dir/été 1.jpg"]
    assert lines[1] == {
        "path": "bad.jpg",
        "status": "error",
        "kind": "image",
        "error": "empty file (0 bytes)",
    }
    coco = json.loads((tmp_path / COCO).read_text("utf-8"))
    ok = [line for line in lines if line["status"] == "ok"]
    assert [i["file_name"] for i in coco["images"]] == [line["path"] for line in ok]
    for image, line in zip(coco["images"], ok, strict=True):
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert [a["bbox"] for a in anns] == [f["bbox"] for f in line["faces"]]
        assert (image["width"], image["height"]) == (line["width"], line["height"])
    assert not list(tmp_path.glob(".*.tmp*"))


def test_write_records_replaces_older_files(tmp_path: Path) -> None:
    (tmp_path / JSONL).write_text("stale\n")
    with Journal(tmp_path) as journal:
        journal.record(ok_entry("a.jpg", faces=[]))
        write_records(journal, tmp_path)
    assert (tmp_path / JSONL).read_text().count("\n") == 1
    assert json.loads((tmp_path / JSONL).read_text())["faces"] == []


@pytest.mark.parametrize("status", ["error", "skipped"])
def test_failed_and_skipped_are_not_in_coco(tmp_path: Path, status: str) -> None:
    entry = error_entry("x.jpg") if status == "error" else skipped_entry("x.txt")
    with Journal(tmp_path) as journal:
        journal.record(entry)
        write_records(journal, tmp_path)
    coco = json.loads((tmp_path / COCO).read_text())
    assert coco["images"] == [] and coco["annotations"] == []
    assert json.loads((tmp_path / JSONL).read_text())["status"] == status
