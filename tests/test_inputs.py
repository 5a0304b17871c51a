"""Turning files, folders and globs into inputs, and the usage errors (exit 2) found before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faceveil.cli import main
from faceveil.errors import UsageError
from faceveil.inputs import InputFile, resolve_inputs


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """in/a.jpg, in/sub/b.png, in/sub dir/été 1.jpg, in/sub/deeper/c.JPG, in/notes.txt"""
    root = tmp_path / "in"
    for rel in ("a.jpg", "sub/b.png", "sub dir/été 1.jpg", "sub/deeper/c.JPG", "notes.txt"):
        touch(root / rel)
    return root


def relatives(files: list[InputFile]) -> list[str]:
    return [f.relative for f in files]


def test_folder_is_recursive_and_sorted(tree: Path, tmp_path: Path) -> None:
    files = resolve_inputs([str(tree)], tmp_path / "out")
    assert relatives(files) == sorted(
        ["a.jpg", "notes.txt", "sub dir/été 1.jpg", "sub/b.png", "sub/deeper/c.JPG"]
    )
    for f in files:
        assert f.source == tree / f.relative and f.source.is_file()


def test_single_file_goes_to_its_name(tree: Path, tmp_path: Path) -> None:
    files = resolve_inputs([str(tree / "sub" / "deeper" / "c.JPG")], tmp_path / "out")
    assert files == [InputFile(tree / "sub" / "deeper" / "c.JPG", "c.JPG")]


def test_glob_keeps_paths_below_its_base(tree: Path, tmp_path: Path) -> None:
    files = resolve_inputs([str(tree / "**" / "*.jpg")], tmp_path / "out")
    assert relatives(files) == ["a.jpg", "sub dir/été 1.jpg"]
    files = resolve_inputs([str(tree / "sub*")], tmp_path / "out")  # globbed folders keep their name
    assert relatives(files) == ["sub dir/été 1.jpg", "sub/b.png", "sub/deeper/c.JPG"]


def test_several_inputs_and_the_same_file_twice(tree: Path, tmp_path: Path) -> None:
    other = touch(tmp_path / "other" / "z.webp")
    files = resolve_inputs([str(tree / "sub"), str(other), str(other), str(tree / "a.jpg")], tmp_path / "out")
    assert relatives(files) == ["a.jpg", "b.png", "deeper/c.JPG", "z.webp"]


def test_the_same_file_spelled_two_ways_is_one_input(tree: Path, tmp_path: Path) -> None:
    twice = [str(tree / "a.jpg"), str(tree / "sub" / ".." / "a.jpg")]
    files = resolve_inputs(twice, tmp_path / "out")
    assert relatives(files) == ["a.jpg"]
    files = resolve_inputs(
        [str(tree / "sub"), str(tree / "sub" / "deeper" / ".." / "b.png")], tmp_path / "out"
    )
    assert relatives(files) == ["b.png", "deeper/c.JPG"]


def test_missing_input_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or folder"):
        resolve_inputs([str(tmp_path / "nope")], tmp_path / "out")
    with pytest.raises(UsageError, match="no file matches"):
        resolve_inputs([str(tmp_path / "*.jpg")], tmp_path / "out")


def test_out_inside_input_folder_is_refused(tree: Path) -> None:
    for out in (tree / "anon", tree, tree / "sub" / "x" / "y"):
        with pytest.raises(UsageError, match="inside the input folder"):
            resolve_inputs([str(tree)], out)


def test_input_inside_out_is_refused(tree: Path) -> None:
    with pytest.raises(UsageError, match="inside the output folder"):
        resolve_inputs([str(tree / "sub" / "b.png")], tree / "sub")
    with pytest.raises(UsageError, match="inside the output folder"):
        resolve_inputs([str(tree / "sub")], tree)


def test_out_reached_through_a_symlink_is_still_inside(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tree, target_is_directory=True)
    with pytest.raises(UsageError, match="inside the input folder"):
        resolve_inputs([str(tree)], link / "anon")


def test_two_inputs_on_the_same_relative_path_are_refused(tmp_path: Path) -> None:
    a = touch(tmp_path / "a" / "x.jpg")
    b = touch(tmp_path / "b" / "x.jpg")
    with pytest.raises(UsageError, match="would both be written to"):
        resolve_inputs([str(a), str(b)], tmp_path / "out")
    with pytest.raises(UsageError, match="would both be written to"):
        resolve_inputs([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out")


# --- the same through the command line: exit 2, nothing written, inputs untouched ------------------


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_cli_out_inside_input_folder(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(tree)
    code, err = cli(capsys, "run", tree, "-o", tree / "anon", "-q")
    assert code == 2
    assert "faceveil: error:" in err and "inside the input folder" in err
    assert not (tree / "anon").exists()
    assert snapshot(tree) == before


def test_cli_input_inside_out(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(tree)
    code, err = cli(capsys, "run", tree / "sub" / "b.png", "-o", tree, "-q")
    assert code == 2 and "inside the output folder" in err
    assert not (tree / ".faceveil").exists() and snapshot(tree) == before


def test_cli_same_relative_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    touch(tmp_path / "a" / "x.jpg")
    touch(tmp_path / "b" / "x.jpg")
    code, err = cli(capsys, "run", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out", "-q")
    assert code == 2 and "would both be written to" in err
    assert not (tmp_path / "out").exists()


def test_cli_detect_has_the_same_checks(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(capsys, "detect", tree, "-o", tree / "det", "-q")
    assert code == 2 and "inside the input folder" in err
    assert not (tree / "det").exists()


def test_cli_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(capsys, "run", tmp_path / "nope.jpg", "-o", tmp_path / "out", "-q")
    assert code == 2 and "no such file or folder" in err
    assert not (tmp_path / "out").exists()


def test_cli_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, err = cli(capsys, "run", tmp_path / "empty", "-o", tmp_path / "out", "-q")
    assert code == 2 and "no input files" in err


@pytest.mark.parametrize(
    "option",
    [
        ["--jobs", "0"],
        ["--max-pixels", "0"],
        ["--quality", "101"],
        ["--margin", "-0.1"],
        ["--threshold", "1.5"],
        ["--detector", "nonesuch"],
    ],
)
def test_cli_bad_options(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str]
) -> None:
    code, err = cli(capsys, "run", tree / "a.jpg", "-o", tmp_path / "out", "-q", *option)
    assert code == 2 and "faceveil: error:" in err, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_cli_output_is_a_file(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unwritable output folders that stop root too: a file, and a folder below a file."""
    blocker = touch(tmp_path / "blocker", b"keep me")
    code, err = cli(capsys, "run", tree / "a.jpg", "-o", blocker, "-q")
    assert code == 2 and "not a folder" in err
    code, err = cli(capsys, "run", tree / "a.jpg", "-o", blocker / "out", "-q")
    assert code == 2 and "cannot write to the output folder" in err
    assert blocker.read_bytes() == b"keep me"


def test_argparse_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path)])  # no -o
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path), "-o", str(tmp_path / "o"), "--method", "smudge"])
    assert exc.value.code == 2
    assert os.listdir(tmp_path) == []
