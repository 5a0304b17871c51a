"""The worker pool survives a worker that dies mid-run: nothing hangs, nothing is lost."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import pytest

from faceveil.pipeline import run
from faceveil.types import Settings


def _copies(shared_data: Path, tmp_path: Path, rounds: int) -> tuple[Path, list[Path]]:
    """An input folder holding ``rounds`` copies of the dlib-faces-coco photos; returns it and the photos."""
    src = tmp_path / "in"
    src.mkdir()
    photos = sorted((shared_data / "dlib-faces-coco" / "images").glob("*.jpg"))
    for i in range(rounds):
        for photo in photos:
            shutil.copy(photo, src / f"{i}_{photo.name}")
    return src, photos


@pytest.mark.slow
def test_killed_worker_is_replaced_and_every_input_finishes(shared_data: Path, tmp_path: Path) -> None:
    src, photos = _copies(shared_data, tmp_path, 3)
    killed: list[int] = []

    def kill_one_worker(entry: object) -> None:
        if killed:
            return
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)
            killed.append(child.pid)
            return

    summary = run([str(src)], tmp_path / "out", Settings(detector="yunet"), jobs=2, on_result=kill_one_worker)

    assert killed, "no worker process was found to kill"
    assert summary.failed == 0
    assert summary.done == len(photos) * 3
    lines = [json.loads(x) for x in (tmp_path / "out" / "faces.jsonl").read_text().splitlines()]
    assert [x["path"] for x in lines] == sorted(p.name for p in src.iterdir())
    assert all(x["status"] == "ok" for x in lines)
    assert all((tmp_path / "out" / x["path"]).is_file() for x in lines)


@pytest.mark.slow
def test_a_pool_that_breaks_while_submitting_loses_no_input(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool can break between a result and the next submit: the input being submitted is kept."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    src, photos = _copies(shared_data, tmp_path, 2)
    real_submit = ProcessPoolExecutor.submit
    calls = []

    def submit(self: ProcessPoolExecutor, fn: object, /, *args: object) -> object:
        calls.append(args)
        if len(calls) == 6:  # the first submit after a result came back (4 are submitted up front)
            raise BrokenProcessPool("a worker died")
        return real_submit(self, fn, *args)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", submit)
    summary = run([str(src)], tmp_path / "out", Settings(detector="yunet"), jobs=2)

    assert len(calls) > 6
    assert (summary.done, summary.failed) == (len(photos) * 2, 0)
    lines = [json.loads(x) for x in (tmp_path / "out" / "faces.jsonl").read_text().splitlines()]
    assert sorted(x["path"] for x in lines) == sorted(p.name for p in src.iterdir())
