"""The streaming run: read → detect → obfuscate → write, on every core, journaled and resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Literal

from faceveil.errors import FaceveilError, UsageError
from faceveil.inputs import InputFile, resolve_inputs
from faceveil.io.atomic import atomic_path
from faceveil.io.image import copy_stripped, is_image_path, read_picture, write_picture
from faceveil.journal import Entry, Journal
from faceveil.records import write_records
from faceveil.types import Settings

Mode = Literal["run", "detect"]
STATE_DIR = ".faceveil"
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
# The hidden temp files of faceveil.io.atomic: ".<name>.<12 hex>.tmp<suffix>".
_STALE_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[^./]*)?$")


@dataclass
class Summary:
    """What a run did, for the closing line and the exit code."""

    files: int = 0
    done: int = 0
    resumed: int = 0
    skipped: int = 0
    failed: int = 0
    faces: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@dataclass(frozen=True)
class Task:
    """One input to process, as sent to a worker."""

    source: str
    relative: str
    sha256: str


def fingerprint(settings: Settings, mode: Mode) -> str:
    """A short hash of everything that changes an output; a resume redoes inputs whose fingerprint differs."""
    data = json.dumps({"mode": mode, **dataclasses.asdict(settings)}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_settings(settings: Settings) -> None:
    """Refuse unknown detector or method names before any work."""
    from faceveil import detectors, methods

    detectors.parse_spec(settings.detector)
    if settings.method not in methods.registered():
        raise UsageError(f"unknown method {settings.method!r}: choose from {', '.join(methods.registered())}")


def check_writable(out: Path) -> None:
    """Create OUT and its state folder, or fail before any work with a plain reason."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output {out} exists and is not a folder")
    try:
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / STATE_DIR / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to the output folder {out}: {exc.strerror or exc}") from exc


def remove_stale_temps(out: Path, relatives: Iterable[str]) -> int:
    """Delete the temp files a killed run left beside its outputs; returns how many.

    Only the folders this run writes to are looked at, and only names that atomic writes use
    (so two runs must not write into the same OUT at once, which the journal does not allow either).
    """
    removed = 0
    for folder in sorted({(out / rel).parent for rel in relatives} | {out}):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = folder / name
            if _STALE_TEMP.match(name) and path.is_file() and not path.is_symlink():
                try:
                    path.unlink()
                except OSError:
                    continue
                removed += 1
    return removed


class Worker:
    """Processes single inputs; one per process, holding its models for the whole run."""

    def __init__(self, settings: Settings, out: Path, mode: Mode, threads: int | None) -> None:
        from PIL import Image

        from faceveil.anonymizer import Anonymizer

        # Our own limit is checked from the header before decoding; Pillow's must not be the tighter one.
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, settings.max_pixels)
        self.settings = settings
        self.out = out
        self.mode = mode
        self.fingerprint = fingerprint(settings, mode)
        self.anonymizer = Anonymizer.from_settings(settings, threads=threads)

    def __call__(self, task: Task) -> Entry:
        """Process one input; any failure becomes an error entry and leaves no output file."""
        dest = self.out / task.relative
        entry = Entry(task.relative, task.source, "ok", "image", task.sha256, self.fingerprint)
        try:
            self._process(Path(task.source), dest, entry)
        except Exception as exc:  # fail closed: whatever went wrong, no output is left behind
            reason = (
                str(exc) if isinstance(exc, FaceveilError) else f"internal error: {type(exc).__name__}: {exc}"
            )
            if self.mode == "run":
                dest.unlink(missing_ok=True)
            return Entry(
                task.relative, task.source, "error", "image", task.sha256, self.fingerprint, error=reason
            )
        return entry

    def _process(self, source: Path, dest: Path, entry: Entry) -> None:
        picture = read_picture(source, self.settings.max_pixels)
        entry.width, entry.height = picture.width, picture.height
        faces = self.anonymizer.detect(picture.rgb8())
        if self.mode == "detect":
            entry.faces = [f.to_json() for f in faces]
            return
        entry.method = self.settings.method
        if faces:
            pixels = picture.pixels.copy()
            hidden = self.anonymizer.hide(pixels, faces)
            write_picture(picture, pixels, dest, self.settings.quality)
            entry.written = "reencoded"
            entry.faces = [h.to_json() for h in hidden]
        else:
            entry.written = (
                copy_stripped(picture, dest) if self.settings.strip_metadata else _copy(source, dest)
            )
            entry.faces = []


def _copy(source: Path, dest: Path) -> str:
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return "copied"


_worker: Worker | None = None
_worker_error: str | None = None


def _init_worker(settings: Settings, out: Path, mode: Mode) -> None:
    """Load the models in a pool process; a failure is kept and raised by the first task as a usage error."""
    global _worker, _worker_error
    try:
        _worker = Worker(settings, out, mode, threads=1)
    except FaceveilError as exc:
        _worker_error = str(exc)


def _work(task: Task) -> Entry:
    if _worker is None:
        raise UsageError(_worker_error or "the worker process could not start")
    return _worker(task)


def plan(
    inputs: list[InputFile], journal: Journal, out: Path, mode: Mode, print_fp: str, summary: Summary
) -> list[Task]:
    """Record unsupported files as skipped and return the inputs that still need work."""
    tasks = []
    for item in inputs:
        if not is_image_path(item.source):
            kind = "video" if item.source.suffix.lower() in VIDEO_SUFFIXES else "unknown"
            reason = f"not a supported image type ({item.source.suffix or 'no extension'})"
            journal.record(Entry(item.relative, str(item.source), "skipped", kind, error=reason))
            summary.skipped += 1
            continue
        try:
            digest = sha256_file(item.source)
        except OSError as exc:
            journal.record(
                Entry(
                    item.relative,
                    str(item.source),
                    "error",
                    "image",
                    error=f"cannot read the file: {exc.strerror or exc}",
                )
            )
            if mode == "run":
                (out / item.relative).unlink(missing_ok=True)
            summary.failed += 1
            summary.errors.append((item.relative, f"cannot read the file: {exc.strerror or exc}"))
            continue
        previous = journal.get(item.relative)
        if previous is not None and _is_done(previous, digest, print_fp, out / item.relative, mode):
            summary.resumed += 1
            summary.faces += len(previous.faces or [])
            continue
        tasks.append(Task(str(item.source), item.relative, digest))
    return tasks


def _is_done(entry: Entry, digest: str, print_fp: str, dest: Path, mode: Mode) -> bool:
    if entry.reviewed:
        return True
    if entry.status != "ok" or entry.sha256 != digest or entry.fingerprint != print_fp:
        return False
    return mode == "detect" or dest.is_file()


def run(
    inputs: list[str],
    out: Path,
    settings: Settings,
    mode: Mode = "run",
    jobs: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Entry], None] | None = None,
) -> Summary:
    """Process every input into ``out``; returns the summary. Raises UsageError before any work."""
    started = time.perf_counter()
    out = Path(out)
    check_settings(settings)
    files = resolve_inputs(inputs, out)
    if not files:
        raise UsageError("no input files found")
    check_writable(out)
    remove_stale_temps(out, [f.relative for f in files])
    summary = Summary(files=len(files))
    print_fp = fingerprint(settings, mode)
    with Journal(out) as journal:
        journal.set_meta("settings", dataclasses.asdict(settings))
        journal.set_meta("mode", mode)
        tasks = plan(files, journal, out, mode, print_fp, summary)
        if on_start:
            on_start(len(tasks))
        for entry in _execute(tasks, settings, out, mode, jobs):
            journal.record(entry)
            if entry.status == "ok":
                summary.done += 1
                summary.faces += len(entry.faces or [])
            else:
                summary.failed += 1
                summary.errors.append((entry.path, entry.error or ""))
            if on_result:
                on_result(entry)
        write_records(journal, out)
    summary.seconds = time.perf_counter() - started
    return summary


def _execute(
    tasks: list[Task], settings: Settings, out: Path, mode: Mode, jobs: int | None
) -> Iterator[Entry]:
    """Results as they finish: in this process for tiny runs, else in a pool of worker processes.

    A worker that dies (out of memory, a crash in native code) does not hang or end the run: the inputs it
    may have been holding are retried one by one in a fresh process, and the one that kills it again is
    recorded as failed.
    """
    if not tasks:
        return
    jobs = jobs or len(os.sched_getaffinity(0))
    if jobs <= 1 or len(tasks) == 1:
        worker = Worker(settings, out, mode, threads=None if len(tasks) == 1 else 1)
        for task in tasks:
            yield worker(task)
        return
    initargs = (settings, out, mode)
    queue = list(tasks)
    while queue:
        suspects, queue = yield from _pooled(queue, min(jobs, len(queue)), initargs)
        for task in suspects:
            again, _ = yield from _pooled([task], 1, initargs)
            if again:
                fp = fingerprint(settings, mode)
                reason = "the worker process died on this file (out of memory or a crash in a decoder)"
                if mode == "run":
                    (out / task.relative).unlink(missing_ok=True)
                yield Entry(task.relative, task.source, "error", "image", task.sha256, fp, error=reason)


def _pooled(
    tasks: list[Task], workers: int, initargs: tuple
) -> Generator[Entry, None, tuple[list[Task], list[Task]]]:
    """Run ``tasks`` in a pool, yielding entries; returns (in flight when a worker died, not yet started)."""
    context = mp.get_context("spawn")
    executor = ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=initargs)
    waiting = iter(tasks)
    running: dict[Future, Task] = {}
    held: Task | None = None  # taken from ``waiting`` and not submitted yet: a broken pool must not lose it
    try:
        for held in islice(waiting, 2 * workers):
            running[executor.submit(_work, held)] = held
        held = None
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                entry = future.result()
                del running[future]
                yield entry
                held = next(waiting, None)
                if held is not None:
                    running[executor.submit(_work, held)] = held
                    held = None
        return [], []
    except BrokenProcessPool:
        return list(running.values()), ([held] if held is not None else []) + list(waiting)
    finally:
        _stop(executor)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Shut a pool down at once, killing workers that are still busy."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()
