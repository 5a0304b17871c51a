"""Turning the command line's files, folders and globs into (source, relative output path) pairs."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from faceveil.errors import UsageError


@dataclass(frozen=True)
class InputFile:
    """One input file and the path its output takes below OUT."""

    source: Path
    relative: str


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _same_file(a: Path, b: Path) -> bool:
    """Whether two spellings (``in/a.jpg``, ``in/../in/a.jpg``) name the same file."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    base = []
    for part in parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def resolve_inputs(args: list[str], out: Path) -> list[InputFile]:
    """Expand inputs (recursively for folders), sorted by relative path; refuse overlaps with ``out``."""
    out_real = Path(os.path.realpath(out))
    found: dict[str, InputFile] = {}
    for arg in args:
        path = Path(arg)
        if path.exists():
            roots = [(path, path.is_dir())]
            base = None
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise UsageError(f"{arg}: no file matches this pattern")
            base = _glob_base(arg)
            roots = [(Path(m), Path(m).is_dir()) for m in matches]
        else:
            raise UsageError(f"{arg}: no such file or folder")
        for root, is_dir in roots:
            real = Path(os.path.realpath(root))
            if is_dir and _inside(out_real, real):
                raise UsageError(f"the output folder {out} is inside the input folder {root}: choose another")
            if _inside(real, out_real):
                raise UsageError(f"the input {root} is inside the output folder {out}: choose another")
            for source, relative in _files_of(root, is_dir, base):
                previous = found.get(relative)
                if previous is not None and not _same_file(previous.source, source):
                    raise UsageError(
                        f"{previous.source} and {source} would both be written to {out / relative}"
                    )
                found[relative] = InputFile(source, relative)
    return [found[k] for k in sorted(found)]


def _files_of(root: Path, is_dir: bool, base: Path | None) -> list[tuple[Path, str]]:
    if not is_dir:
        relative = root.relative_to(base).as_posix() if base is not None else root.name
        return [(root, relative)]
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            source = Path(folder) / name
            if source.is_file():
                rel = source.relative_to(root)
                if base is not None:
                    rel = root.relative_to(base) / rel
                files.append((source, rel.as_posix()))
    return files
