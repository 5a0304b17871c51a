"""``faceveil audit OUT --originals IN``: check an anonymized folder before it is released.

Two independent checks, run on every image of the run that has an output file:

- **residual faces** (:mod:`faceveil.audit.residual`): a second detector, different from the run's,
  looks for faces in the anonymized file at a sensitive threshold; finds are split into faces still
  visible inside a hidden region and faces outside every region (missed-face candidates), and cropped
  onto a PNG contact sheet (:mod:`faceveil.audit.sheet`);
- **re-identification** (:mod:`faceveil.audit.reid`): for each recorded face, SFace embeddings of the
  original and the anonymized face, aligned the same way; the share still matching at cosine >= 0.363,
  overall and by face height.

:func:`run_audit` returns the figures (the ``--json`` document) and the exit code: 1 when a limit is
exceeded. Problems with the inputs (no ``faces.jsonl``, originals missing or different, sizes that do
not match) raise :class:`~faceveil.errors.UsageError` naming the file, before any work.

This module imports only the standard library at import time: the CLI loads it to build its parser.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import multiprocessing as mp
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from faceveil.errors import FaceveilError, UsageError

JSONL = "faces.jsonl"
SHEET_DEFAULT = Path(".faceveil") / "audit" / "residual-sheet.png"
"""Where the crop sheet goes, relative to OUT, when ``--sheet`` is not given."""
MAX_LISTED_MATCHES = 1000


@dataclass
class AuditOptions:
    """What ``faceveil audit`` was asked to do (the CLI's options)."""

    out: Path
    originals: Path
    detector: str | None = None
    threshold: float = 0.2
    max_residual_share: float | None = None
    max_reid_share: float = 0.01
    reid_gate: str = "share"
    """The figure of ``reid.min_face`` the limit applies to: ``share`` (cosine) or ``identified_share``."""
    min_face: float = 32.0
    jobs: int | None = None
    sheet: Path | None = None
    cosine_threshold: float = 0.363

    def check(self) -> None:
        """Raise UsageError for out-of-range options."""
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError("--threshold must be between 0 and 1")
        for name, value in (
            ("--max-reid-share", self.max_reid_share),
            ("--max-residual-share", self.max_residual_share),
        ):
            if value is not None and not 0.0 <= value <= 1.0:
                raise UsageError(f"{name} must be between 0 and 1")
        if self.reid_gate not in ("share", "identified_share"):
            raise UsageError("--reid-gate must be share or identified_share")
        if self.min_face < 0:
            raise UsageError("--min-face must be 0 or more")
        if self.jobs is not None and self.jobs < 1:
            raise UsageError("--jobs must be 1 or more")


@dataclass(frozen=True)
class FileTask:
    """One anonymized image to audit against its original."""

    path: str
    original: str
    anonymized: str
    width: int | None
    height: int | None
    faces: tuple[dict[str, Any], ...]


@dataclass
class Find:
    """One residual find in an anonymized file."""

    path: str
    bbox: tuple[float, float, float, float]
    score: float
    where: str
    face: int | None
    crop: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "bbox": [round(v, 1) for v in self.bbox],
            "score": round(self.score, 4),
            "where": self.where,
            "face": self.face,
        }


@dataclass
class FileResult:
    """What the audit found in one file."""

    path: str
    faces: list[Any] = field(default_factory=list)
    embeddings: Any = None  # float32 (faces, 2, 128): original and anonymized, in the order of faces
    finds: list[Find] = field(default_factory=list)
    error: str | None = None


@dataclass
class AuditResult:
    """The figures (the ``--json`` document) and the exit code."""

    figures: dict[str, Any]
    exit_code: int


# --- reading and checking the run ---------------------------------------------------------------


def load_records(out: Path) -> list[dict[str, Any]]:
    """The lines of ``OUT/faces.jsonl``; UsageError when OUT is not a run's output."""
    if not out.is_dir():
        raise UsageError(f"{out} is not a folder: give the output folder of `faceveil run`")
    path = out / JSONL
    if not path.is_file():
        raise UsageError(f"{path} not found: {out} is not the output of `faceveil run` (no record to audit)")
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}, line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or "path" not in record or "status" not in record:
            raise UsageError(f"{path}, line {number}: not a faces.jsonl record (no path or status)")
        records.append(record)
    return records


def load_settings(out: Path) -> dict[str, Any] | None:
    """The run's settings from its journal, or None when there is no readable journal."""
    if not (out / ".faceveil" / "journal.sqlite").is_file():
        return None
    from faceveil.journal import Journal

    try:
        with Journal(out) as journal:
            settings = journal.get_meta("settings")
    except (sqlite3.Error, OSError):
        return None
    return settings if isinstance(settings, dict) else None


def _safe_relative(path: str, where: Path) -> str:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UsageError(f"{where / JSONL}: unsafe path {path!r} in the record")
    return str(rel)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _displayed_size(path: Path) -> tuple[int, int]:
    """Width and height as displayed (EXIF orientation applied), from the header only."""
    from PIL import Image

    import faceveil.io.image  # noqa: F401  (registers the HEIF opener)

    with Image.open(path) as im:
        width, height = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _listing(problems: list[str], limit: int = 10) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"\n  {shown}{more}"


def plan(options: AuditOptions, records: list[dict[str, Any]]) -> tuple[list[FileTask], dict[str, int]]:
    """The files to audit, and counts of those left out; UsageError naming every bad file."""
    out, originals = Path(options.out), Path(options.originals)
    if not originals.exists():
        raise UsageError(f"--originals {originals} does not exist")
    left_out = {"error": 0, "skipped": 0, "video": 0}
    tasks, missing, missing_out, differ, sizes = [], [], [], [], []
    for record in records:
        status, kind = record.get("status"), record.get("kind", "image")
        if status != "ok":
            left_out["error" if status == "error" else "skipped"] += 1
            continue
        if kind != "image":
            left_out["video"] += 1
            continue
        rel = _safe_relative(str(record["path"]), out)
        if originals.is_file():
            original = originals if originals.name == PurePosixPath(rel).name else originals.parent / rel
        else:
            original = originals / rel
        anonymized = out / rel
        if not original.is_file():
            missing.append(str(original))
            continue
        if not anonymized.is_file():
            missing_out.append(str(anonymized))
            continue
        if record.get("sha256") and _sha256(original) != record["sha256"]:
            differ.append(f"{original} (SHA-256 differs from the one in {out / JSONL} for {rel!r})")
            continue
        want = (record.get("width"), record.get("height"))
        for label, file in (("original", original), ("anonymized", anonymized)):
            try:
                size = _displayed_size(file)
            except Exception as exc:
                sizes.append(f"{file}: cannot read the {label} image ({type(exc).__name__}: {exc})")
                continue
            if None not in want and size != want:
                sizes.append(
                    f"{file}: the {label} image is {size[0]}x{size[1]} but the run recorded "
                    f"{want[0]}x{want[1]} for {rel!r}"
                )
        tasks.append(
            FileTask(
                rel,
                str(original),
                str(anonymized),
                record.get("width"),
                record.get("height"),
                tuple(record.get("faces") or ()),
            )
        )
    if missing:
        raise UsageError(f"{len(missing)} original(s) missing under {originals}:{_listing(missing)}")
    if missing_out:
        raise UsageError(
            f"{len(missing_out)} anonymized file(s) recorded as ok are missing from {out}:"
            f"{_listing(missing_out)}"
        )
    if differ:
        raise UsageError(
            f"{len(differ)} original(s) are not the files that were anonymized:{_listing(differ)}"
        )
    if sizes:
        raise UsageError(f"{len(sizes)} image(s) do not match in size:{_listing(sizes)}")
    return tasks, left_out


# --- the work, one file at a time -----------------------------------------------------------------


class AuditWorker:
    """Audits single files; one per process, holding the residual detector and SFace for the whole run."""

    def __init__(self, choice: Any, threshold: float, threads: int | None) -> None:
        from faceveil.audit.reid import Landmarker, SFace

        self.detector = choice.build(threads=threads)
        self.sface = SFace(threads=threads)
        self.landmarker = Landmarker(threads=threads)
        self.threshold = threshold

    def __call__(self, task: FileTask) -> FileResult:
        from faceveil.errors import InputError
        from faceveil.io.image import read_picture

        result = FileResult(task.path)
        try:
            # the original is needed only to compare faces (its size was checked from its header)
            wanted = [("anonymized", task.anonymized)] + ([("original", task.original)] if task.faces else [])
            images = {}
            for label, file in wanted:
                try:
                    images[label] = read_picture(Path(file)).rgb8()
                except InputError as exc:
                    result.error = f"{file}: cannot read the {label} image: {exc}"
                    return result
            anonymized = images["anonymized"]
            result.finds = self._residual(task, anonymized)
            if task.faces:
                original = images["original"]
                if original.shape[:2] != anonymized.shape[:2]:
                    (h0, w0), (h1, w1) = original.shape[:2], anonymized.shape[:2]
                    result.error = (
                        f"{task.anonymized}: {w1}x{h1} but its original {task.original} is {w0}x{h0}"
                    )
                    return result
                result.faces, result.embeddings = self._reid(task, original, anonymized)
        except Exception as exc:  # one bad file must not stop the audit: it is reported by name
            result.error = f"{task.anonymized}: internal error: {type(exc).__name__}: {exc}"
        return result

    def _residual(self, task: FileTask, anonymized: Any) -> list[Find]:
        from faceveil.audit.residual import classify, crop_tile
        from faceveil.audit.sheet import TILE

        finds = []
        for face in self.detector.detect(anonymized, self.threshold):
            bbox = tuple(float(v) for v in face.bbox)
            where, index = classify(bbox, task.faces)
            finds.append(
                Find(task.path, bbox, float(face.score), where, index, crop_tile(anonymized, bbox, TILE))  # type: ignore[arg-type]
            )
        return finds

    def _reid(self, task: FileTask, original: Any, anonymized: Any) -> tuple[list[Any], Any]:
        import cv2
        import numpy as np

        from faceveil.audit.reid import FaceReid, face_row, identity_free

        if not task.faces:
            return [], np.zeros((0, 2, 128), np.float32)
        control = identity_free(original, [_record_region(face) for face in task.faces])
        bgr = [cv2.cvtColor(image, cv2.COLOR_RGB2BGR) for image in (original, anonymized, control)]
        crops, rows = [], []
        for i, face in enumerate(task.faces):
            landmarks, source = face.get("landmarks"), "record"
            if not landmarks or len(landmarks) != 5:
                landmarks, source = self.landmarker(original, face["bbox"])
            score = float(face.get("score", 1.0))
            row = face_row(face["bbox"], landmarks, score)
            crops += [self.sface.align(image, row) for image in bgr]
            rows.append(
                FaceReid(
                    task.path, i, float(face["bbox"][3]), 0.0, source, score, str(face.get("detector", ""))
                )
            )
        feats = self.sface.embed(crops).reshape(len(rows), 3, -1)
        cosines = np.einsum("fd,fd->f", feats[:, 0], feats[:, 1])
        controls = np.einsum("fd,fd->f", feats[:, 0], feats[:, 2])
        rows = [
            replace(r, cosine=float(a), control_cosine=float(c))
            for r, a, c in zip(rows, cosines, controls, strict=True)
        ]
        return rows, feats[:, :2].astype(np.float32)


def _record_region(face: dict[str, Any]) -> Any:
    """The region a record says was hidden (``faceveil detect`` records have none: the face's box)."""
    from faceveil.types import Region

    return Region.from_json(face.get("region") or {"shape": "box", "bbox": face["bbox"]})


_worker: AuditWorker | None = None


def _init_worker(choice: Any, threshold: float) -> None:
    global _worker
    _worker = AuditWorker(choice, threshold, threads=1)


def _work(task: FileTask) -> FileResult:
    assert _worker is not None
    return _worker(task)


def _execute(tasks: list[FileTask], choice: Any, threshold: float, jobs: int) -> Iterator[FileResult]:
    """Results as they finish: in this process for one job or one file, else in worker processes."""
    if not tasks:
        return
    if jobs <= 1 or len(tasks) == 1:
        worker = AuditWorker(choice, threshold, threads=None)
        for task in tasks:
            yield worker(task)
        return
    AuditWorker(choice, threshold, threads=1)  # load the models here once: a bad setup fails before the pool
    pool = mp.get_context("spawn").Pool(
        min(jobs, len(tasks)), initializer=_init_worker, initargs=(choice, threshold)
    )
    try:
        yield from pool.imap_unordered(_work, tasks, chunksize=1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


# --- putting it together ---------------------------------------------------------------------------


def _tile_key(find: Find) -> tuple[Any, ...]:
    """Sheet order: faces outside every region first, then by score, then by file."""
    from faceveil.audit.residual import OUTSIDE

    return (find.where != OUTSIDE, -find.score, find.path, find.bbox)


def run_audit(
    options: AuditOptions,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> AuditResult:
    """Audit ``options.out`` against ``options.originals``; UsageError for bad input, before any work."""
    from faceveil.audit import reid, residual, sheet

    options.check()
    out = Path(options.out)
    records = load_records(out)
    settings = load_settings(out)
    run_detector = settings.get("detector") if settings else None
    record_detectors = {
        f.get("detector", "") for r in records for f in (r.get("faces") or []) if isinstance(f, dict)
    }
    tasks, left_out = plan(options, records)
    members = residual.detector_members(run_detector, record_detectors)
    choice = residual.choose_detector(options.detector, members)
    jobs = options.jobs or len(os.sched_getaffinity(0))
    if choice.note:
        print(f"faceveil audit: warning: residual detector {choice.name} {choice.note}", file=sys.stderr)

    faces: list[Any] = []
    embeddings: list[Any] = []
    finds: list[Find] = []
    errors: list[str] = []
    # the tiles to draw: a heap holding the first MAX_TILES finds in sheet order
    kept: list[tuple[Any, int, Find, Any]] = []
    counter = itertools.count()
    if on_start:
        on_start(len(tasks))
    for result in _execute(tasks, choice, options.threshold, jobs):
        if result.error:
            errors.append(result.error)
        faces.extend(result.faces)
        if result.faces:
            embeddings.append(result.embeddings)
        for find in result.finds:
            crop, find.crop = find.crop, None
            finds.append(find)
            entry = (_Rev(_tile_key(find)), next(counter), find, crop)
            if len(kept) < sheet.MAX_TILES:
                heapq.heappush(kept, entry)
            elif entry[0] > kept[0][0]:
                heapq.heapreplace(kept, entry)
        if on_result:
            on_result(result)
    if errors:
        raise UsageError(f"{len(errors)} file(s) could not be audited:{_listing(sorted(errors))}")

    if faces:
        import numpy as np

        stacked = np.concatenate(embeddings)
        identified = reid.rank_one(stacked[:, 0], stacked[:, 1])
        faces = [replace(f, identified=bool(ok)) for f, ok in zip(faces, identified, strict=True)]
    faces.sort(key=lambda r: (r.path, r.index))
    finds.sort(key=lambda f: (f.path, f.bbox))
    tiles = [
        sheet.SheetTile(crop, f.path, f.score, f.where)
        for _, _, f, crop in sorted(kept, key=lambda e: _tile_key(e[2]))
    ]
    sheet_path = Path(options.sheet) if options.sheet else out / SHEET_DEFAULT
    header = f"{len(finds)} residual find(s), {choice.name} at {options.threshold:g}" + (
        f", showing {len(tiles)}" if len(tiles) < len(finds) else ""
    )
    try:
        sheet.write_sheet(sheet_path, tiles, header)
        sheet_written: str | None = str(sheet_path)
    except OSError as exc:
        if options.sheet:
            raise UsageError(f"cannot write the crop sheet {sheet_path}: {exc.strerror or exc}") from exc
        print(f"faceveil audit: warning: crop sheet not written ({sheet_path}: {exc})", file=sys.stderr)
        sheet_written = None

    figures = _figures(options, settings, members, choice, tasks, left_out, faces, finds, reid, residual)
    figures["residual"]["sheet"] = sheet_written
    figures["residual"]["sheet_tiles"] = len(tiles) if sheet_written else 0
    exceeded = []
    share = figures["reid"]["min_face"][options.reid_gate]
    if share is not None and share > options.max_reid_share:
        exceeded.append(
            f"reid.min_face.{options.reid_gate} {share:.4f} > max_reid_share {options.max_reid_share:g}"
        )
    res_share = figures["residual"]["share"]
    if (
        options.max_residual_share is not None
        and res_share is not None
        and res_share > options.max_residual_share
    ):
        exceeded.append(f"residual.share {res_share:.4f} > max_residual_share {options.max_residual_share:g}")
    figures["exceeded"] = exceeded
    figures["exit_code"] = 1 if exceeded else 0
    return AuditResult(figures, figures["exit_code"])


class _Rev:
    """Reverses ordering, so a min-heap keeps the tiles that come first on the sheet."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key

    def __lt__(self, other: _Rev) -> bool:
        return self.key > other.key

    def __gt__(self, other: _Rev) -> bool:
        return self.key < other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.key == other.key

    __hash__ = None  # type: ignore[assignment]


def _figures(
    options: AuditOptions,
    settings: dict[str, Any] | None,
    members: set[str],
    choice: Any,
    tasks: list[FileTask],
    left_out: dict[str, int],
    faces: list[Any],
    finds: list[Find],
    reid: Any,
    residual: Any,
) -> dict[str, Any]:
    """The ``--json`` document (the report shows the same names)."""
    figures_reid = reid.summarize(faces, options.min_face, options.cosine_threshold)
    matched = [f for f in faces if f.matched(options.cosine_threshold)]
    figures_reid["matched_faces"] = [
        {
            "path": f.path,
            "face": f.index,
            "height": round(f.height, 1),
            "cosine": round(f.cosine, 4),
            "identified": f.identified,
            "score": round(f.score, 4),
            "detector": f.detector,
        }
        for f in sorted(matched, key=lambda f: -f.cosine)[:MAX_LISTED_MATCHES]
    ]
    by_file: dict[str, list[Find]] = {}
    for find in finds:
        by_file.setdefault(find.path, []).append(find)
    inside = sum(f.where == residual.INSIDE for f in finds)
    return {
        "out": str(options.out),
        "originals": str(options.originals),
        "run": {
            "detector": settings.get("detector") if settings else None,
            "detector_members": sorted(members),
            "method": settings.get("method") if settings else None,
        },
        "files": {"audited": len(tasks), "not_audited": left_out},
        "reid": figures_reid,
        "residual": {
            "detector": choice.name,
            "detector_source": choice.source,
            "independent": choice.independent,
            "threshold": options.threshold,
            "files_audited": len(tasks),
            "files_with_finds": len(by_file),
            "share": round(len(by_file) / len(tasks), 6) if tasks else None,
            "finds": len(finds),
            residual.INSIDE: inside,
            residual.OUTSIDE: len(finds) - inside,
            "files_with_outside_finds": sum(
                any(f.where == residual.OUTSIDE for f in group) for group in by_file.values()
            ),
            "files": [
                {"path": path, "finds": [f.to_json() for f in group]}
                for path, group in sorted(by_file.items())
            ],
        },
        "limits": {
            "max_reid_share": options.max_reid_share,
            "reid_gate": options.reid_gate,
            "min_face": options.min_face,
            "max_residual_share": options.max_residual_share,
        },
    }


__all__ = ["AuditOptions", "AuditResult", "FaceveilError", "UsageError", "run_audit"]
