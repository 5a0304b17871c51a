"""Utility: what an image classifier loses when faces are hidden.

Top-1 and top-5 accuracy on the originals and on the anonymized copies (an existing folder, or made in
memory by an :class:`~faceveil.anonymizer.Anonymizer`), the drop with a seeded paired-bootstrap 95 %
interval and McNemar's test, the share of images touched, and the classes that lose most.

>>> ev = UtilityEvaluator("imagenet-sample/images", "imagenet-sample/labels.csv")
>>> for t in (0.5, 0.6, 0.7):
...     print(t, ev.evaluate(Anonymizer(detector="yunet", threshold=t)).top1_drop)

Scores of the original images are cached on disk, keyed by the model and each file's SHA-256, so a
second run (or every point of a sweep) only classifies the images the anonymizer changed. Images with
no face hidden keep the scores of their original, as their pixels are identical.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceveil.errors import FaceveilError, InputError, UsageError
from faceveil.eval.classifier import BUILTIN, Classifier, imagenet_categories, load_classifier
from faceveil.io.atomic import atomic_path

if TYPE_CHECKING:
    from faceveil.anonymizer import Anonymizer

CACHE_ENV = "FACEVEIL_CACHE"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
EXACT_MCNEMAR_MAX = 10_000
"""Above this many discordant images McNemar's p-value comes from the chi-square approximation."""
_INDEX_COLUMNS = ("class_index", "label", "class")
_WNID = re.compile(r"^n\d{8}$")


# --- labels --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelRow:
    """One labelled image: its file (relative to the images folder), class and the CSV line it came from."""

    file: str
    path: Path
    class_index: int
    class_name: str | None
    wnid: str | None
    line: int


def load_labels(labels: Path, images: Path, limit: int | None = None) -> list[LabelRow]:
    """Read and check a labels CSV (``file`` and ``class_index`` columns; ``wnid``, ``class_name`` optional).

    Any problem (no such column, a class that is not a whole number 0 or more, a wnid that disagrees with
    its class_index, a file listed twice, a listed image that does not exist) is a :class:`UsageError`
    naming the file and line. ``limit`` keeps the first rows only.
    """
    labels, images = Path(labels), Path(images)
    if not images.is_dir():
        raise UsageError(f"--images {images}: not a folder")
    try:
        text = labels.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise UsageError(f"--labels {labels}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{labels}: cannot read the labels file ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    index_column = next((c for c in _INDEX_COLUMNS if c in columns), None)
    if "file" not in columns or index_column is None:
        raise UsageError(
            f"{labels}:1: the header needs the columns file and class_index "
            f"(found: {', '.join(columns) or 'nothing'})"
        )
    rows: list[LabelRow] = []
    seen_files: dict[str, int] = {}
    wnid_index: dict[str, tuple[int, int]] = {}
    index_wnid: dict[int, tuple[str, int]] = {}
    for record in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
            continue
        name = (record.get("file") or "").strip()
        if not name:
            raise UsageError(f"{labels}:{line}: empty file name")
        raw = (record.get(index_column) or "").strip()
        if not re.fullmatch(r"[0-9]+", raw):
            raise UsageError(
                f"{labels}:{line}: unknown class {raw!r} for {name}: {index_column} must be a whole number "
                "such as 0 to 999 for ImageNet"
            )
        index = int(raw)
        wnid = (record.get("wnid") or "").strip() or None
        if wnid is not None:
            if not _WNID.match(wnid):
                raise UsageError(
                    f"{labels}:{line}: unknown class: {wnid!r} is not a WordNet id like n01440764"
                )
            if wnid in wnid_index and wnid_index[wnid][0] != index:
                other, first = wnid_index[wnid]
                raise UsageError(
                    f"{labels}:{line}: unknown class: {wnid} is class {index} here but class {other} "
                    f"on line {first}"
                )
            if index in index_wnid and index_wnid[index][0] != wnid:
                other_wnid, first = index_wnid[index]
                raise UsageError(
                    f"{labels}:{line}: unknown class: class {index} is {wnid} here but {other_wnid} "
                    f"on line {first}"
                )
            wnid_index.setdefault(wnid, (index, line))
            index_wnid.setdefault(index, (wnid, line))
        if name in seen_files:
            raise UsageError(f"{labels}:{line}: {name} is listed twice (first on line {seen_files[name]})")
        seen_files[name] = line
        class_name = (record.get("class_name") or "").strip() or None
        rows.append(LabelRow(name, images / name, index, class_name, wnid, line))
    if not rows:
        raise UsageError(f"{labels}: no labelled images")
    if limit is not None:
        if limit < 1:
            raise UsageError("--limit must be 1 or more")
        rows = rows[:limit]
    _check_present(rows, labels, images)
    return rows


def _check_present(rows: list[LabelRow], labels: Path, folder: Path, what: str = "") -> None:
    """A UsageError naming the first listed image missing under ``folder`` (and how many more are)."""
    missing = [r for r in rows if not (folder / r.file).is_file()]
    if not missing:
        return
    first = missing[0]
    more = f" ({len(missing) - 1} more missing, e.g. lines {', '.join(str(r.line) for r in missing[1:4])})"
    raise UsageError(
        f"{labels}:{first.line}: {first.file} is listed but {folder / first.file} does not exist{what}"
        + (more if len(missing) > 1 else "")
    )


def check_classes(rows: list[LabelRow], classifier: Classifier, labels: Path) -> None:
    """Every class must be one of the model's outputs; else a UsageError naming the labels line and model."""
    for row in rows:
        if row.class_index >= classifier.num_classes:
            raise UsageError(
                f"{labels}:{row.line}: unknown class {row.class_index} for {row.file}: the model "
                f"{classifier.name} has {classifier.num_classes} classes (0 to {classifier.num_classes - 1})"
            )


# --- statistics ----------------------------------------------------------------------------------


def paired_bootstrap_ci(
    before: np.ndarray,
    after: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
) -> tuple[float, float]:
    """Percentile interval of mean(before - after) over images resampled with replacement (paired)."""
    diff = np.asarray(before, np.float64) - np.asarray(after, np.float64)
    n = len(diff)
    if n == 0 or resamples < 1:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, np.float64)
    step = max(1, 2_000_000 // n)
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        means[start : start + count] = diff[rng.integers(0, n, size=(count, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return (float(low), float(high))


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on the paired top-1 outcomes."""

    correct_to_wrong: int
    wrong_to_correct: int
    p_value: float
    test: str
    """``exact`` (two-sided binomial) or ``chi-square`` (with continuity correction)."""
    chi_square: float

    def to_json(self) -> dict[str, Any]:
        return {
            "correct_to_wrong": self.correct_to_wrong,
            "wrong_to_correct": self.wrong_to_correct,
            "p_value": self.p_value,
            "test": self.test,
            "chi_square": round(self.chi_square, 4),
        }


def mcnemar(before: np.ndarray, after: np.ndarray) -> McNemar:
    """Exact two-sided McNemar test (binomial on the discordant pairs); chi-square beyond 10,000 of them."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    b = int(np.sum(before & ~after))
    c = int(np.sum(~before & after))
    n = b + c
    chi2 = (abs(b - c) - 1) ** 2 / n if abs(b - c) > 1 else 0.0
    p_chi2 = math.erfc(math.sqrt(chi2 / 2.0))
    if n == 0:
        return McNemar(b, c, 1.0, "exact", 0.0)
    if n > EXACT_MCNEMAR_MAX:
        return McNemar(b, c, min(1.0, p_chi2), "chi-square", chi2)
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return McNemar(b, c, min(1.0, 2 * tail / 2**n), "exact", chi2)


# --- results -------------------------------------------------------------------------------------


@dataclass
class ImageOutcome:
    """One image: its class, what the model said before and after, and how many faces were hidden."""

    file: str
    line: int
    class_index: int
    class_name: str
    faces: int | None
    touched: bool
    changed: bool
    top1_originals: bool
    top1_anonymized: bool
    top5_originals: bool
    top5_anonymized: bool
    predicted_originals: int
    predicted_anonymized: int
    true_score_originals: float
    true_score_anonymized: float

    def to_json(self, names: Callable[[int], str]) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "faces": self.faces,
            "predicted_originals": names(self.predicted_originals),
            "predicted_anonymized": names(self.predicted_anonymized),
            "predicted_anonymized_index": self.predicted_anonymized,
            "true_class_probability_originals": round(self.true_score_originals, 4),
            "true_class_probability_anonymized": round(self.true_score_anonymized, 4),
        }


@dataclass
class ClassLoss:
    """Top-1 of one class before and after; ``lost`` images flipped from correct to wrong."""

    class_index: int
    class_name: str
    images: int
    top1_originals: int
    top1_anonymized: int
    lost: int
    gained: int
    faces: int
    probability_drop: float
    """Mean drop of the true class's probability over the class's images."""
    files: list[str] = field(default_factory=list)

    @property
    def net_loss(self) -> int:
        return self.top1_originals - self.top1_anonymized

    def to_json(self) -> dict[str, Any]:
        return {
            "class_index": self.class_index,
            "class_name": self.class_name,
            "images": self.images,
            "top1_originals": self.top1_originals,
            "top1_anonymized": self.top1_anonymized,
            "lost": self.lost,
            "gained": self.gained,
            "faces": self.faces,
            "probability_drop": round(self.probability_drop, 4),
            "files": self.files,
        }


@dataclass
class Accuracies:
    """Top-1 and top-5 on the originals and on the anonymized copies (fractions), each drop (originals -
    anonymized) and its paired-bootstrap 95 % interval."""

    images: int
    top1_originals: float
    top1_anonymized: float
    top1_drop: float
    top1_drop_ci: tuple[float, float]
    top5_originals: float
    top5_anonymized: float
    top5_drop: float
    top5_drop_ci: tuple[float, float]


def accuracies(
    top1: tuple[np.ndarray, np.ndarray], top5: tuple[np.ndarray, np.ndarray], resamples: int, seed: int
) -> dict[str, Any]:
    """The :class:`Accuracies` fields from per-image hits, each an (originals, anonymized) pair."""
    out: dict[str, Any] = {"images": len(top1[0])}
    for name, (hits_o, hits_a) in (("top1", top1), ("top5", top5)):
        out[f"{name}_originals"] = float(hits_o.mean())
        out[f"{name}_anonymized"] = float(hits_a.mean())
        out[f"{name}_drop"] = float(hits_o.mean() - hits_a.mean())
        out[f"{name}_drop_ci"] = paired_bootstrap_ci(hits_o, hits_a, resamples, seed)
    return out


@dataclass
class UtilityResult(Accuracies):
    """Every utility figure: accuracies and shares are fractions (0-1), a drop is originals - anonymized."""

    model: str
    anonymized: dict[str, Any]
    mcnemar: McNemar
    touched: int
    changed: int
    faces: int | None
    losing_classes: list[ClassLoss]
    outcomes: list[ImageOutcome] = field(repr=False)
    seconds: float = 0.0
    bootstrap: dict[str, Any] = field(default_factory=dict)
    categories: list[str] | None = field(default=None, repr=False)

    @property
    def touched_share(self) -> float:
        return self.touched / self.images if self.images else 0.0

    @property
    def flipped(self) -> list[ImageOutcome]:
        """Images correct (top-1) on the original and wrong on the anonymized copy."""
        return [o for o in self.outcomes if o.top1_originals and not o.top1_anonymized]

    def class_name(self, index: int) -> str:
        for o in self.outcomes:
            if o.class_index == index:
                return o.class_name
        if self.categories is not None and 0 <= index < len(self.categories):
            return self.categories[index]
        return f"class {index}"

    def to_json(self) -> dict[str, Any]:
        """The figures keyed by the names the report uses (``top1``, ``top5``, ``touched``, ...)."""
        names = self._namer()
        return {
            "command": "utility",
            "units": "fractions of images (0-1); drop = originals - anonymized",
            "model": self.model,
            "images": self.images,
            "anonymized": self.anonymized,
            "top1": _accuracy_json(
                self.top1_originals, self.top1_anonymized, self.top1_drop, self.top1_drop_ci
            ),
            "top5": _accuracy_json(
                self.top5_originals, self.top5_anonymized, self.top5_drop, self.top5_drop_ci
            ),
            "bootstrap": self.bootstrap,
            "mcnemar": self.mcnemar.to_json(),
            "touched": {
                "share": round(self.touched_share, 6),
                "images": self.touched,
                "faces": self.faces,
                "changed_images": self.changed,
            },
            "losing_classes": [c.to_json() for c in self.losing_classes],
            "flipped": [o.to_json(names) for o in self.flipped],
            "seconds": round(self.seconds, 2),
        }

    def _namer(self) -> Callable[[int], str]:
        known = {o.class_index: o.class_name for o in self.outcomes}

        def name(index: int) -> str:
            if index in known:
                return known[index]
            if self.categories is not None and 0 <= index < len(self.categories):
                return self.categories[index]
            return f"class {index}"

        return name

    def report(self, top: int = 10, markdown: bool = False) -> str:
        """The figures as text (or Markdown), each row named as its key in :meth:`to_json`."""
        return _report(self, top, markdown)


def _accuracy_json(before: float, after: float, drop: float, ci: tuple[float, float]) -> dict[str, Any]:
    return {
        "originals": round(before, 6),
        "anonymized": round(after, 6),
        "drop": round(drop, 6),
        "drop_ci95": [round(ci[0], 6), round(ci[1], 6)],
    }


# --- the cache of original scores ----------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$FACEVEIL_CACHE``, else ``$XDG_CACHE_HOME/faceveil``, else ``~/.cache/faceveil``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceveil"


class ScoreCache:
    """Class scores per (model, file SHA-256), one small .npy file each; unreadable entries are misses."""

    def __init__(self, root: Path | None, identity: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", identity)
        self.folder = None if root is None else Path(root) / "utility" / safe

    def get(self, digest: str, classes: int) -> np.ndarray | None:
        if self.folder is None:
            return None
        path = self.folder / digest[:2] / f"{digest}.npy"
        try:
            scores = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return scores if scores.shape == (classes,) and scores.dtype == np.float32 else None

    def put(self, digest: str, scores: np.ndarray) -> None:
        if self.folder is None:
            return
        path = self.folder / digest[:2] / f"{digest}.npy"
        try:
            with atomic_path(path) as tmp, tmp.open("wb") as fh:
                np.save(fh, np.asarray(scores, np.float32), allow_pickle=False)
        except OSError:
            pass  # a cache that cannot be written only costs time


# --- the evaluation ------------------------------------------------------------------------------


class _Batcher:
    """Collects preprocessed images and classifies them a batch at a time."""

    def __init__(self, classifier: Classifier, size: int, done: Callable[[Any, np.ndarray], None]) -> None:
        self.classifier = classifier
        self.size = max(1, size)
        self.done = done
        self.keys: list[Any] = []
        self.inputs: list[np.ndarray] = []

    def add(self, key: Any, rgb: np.ndarray) -> None:
        self.keys.append(key)
        self.inputs.append(self.classifier.preprocess(rgb))
        if len(self.keys) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.keys:
            return
        scores = self.classifier.predict(np.stack(self.inputs))
        for key, row in zip(self.keys, scores, strict=True):
            self.done(key, np.asarray(row, np.float32))
        self.keys, self.inputs = [], []


class UtilityEvaluator:
    """Holds the labels, the classifier and the originals' scores, for one or many anonymizer settings."""

    def __init__(
        self,
        images: Path | str,
        labels: Path | str,
        model: str | Path | Classifier = BUILTIN,
        *,
        arch: str = BUILTIN,
        trust_pickle: bool = False,
        cache_dir: Path | str | None = "default",
        limit: int | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.images = Path(images)
        self.labels = Path(labels)
        self.rows = load_labels(self.labels, self.images, limit)
        if isinstance(model, Classifier):
            self.classifier = model
        else:
            self.classifier = load_classifier(model, arch=arch, threads=threads, trust_pickle=trust_pickle)
        check_classes(self.rows, self.classifier, self.labels)
        root = default_cache_dir() if cache_dir == "default" else cache_dir
        self.cache = ScoreCache(None if root is None else Path(root), self.classifier.identity)
        self.batch_size = batch_size
        self.threads = threads
        self.progress = progress
        self._original: np.ndarray | None = None
        self._digests: list[str | None] = [None] * len(self.rows)

    # public ------------------------------------------------------------------------------------

    def original_scores(self) -> np.ndarray:
        """(images, classes) scores of the originals, from the cache where possible."""
        if self._original is None:
            self._run(None, None)
        assert self._original is not None
        return self._original

    def evaluate(
        self,
        anonymizer: Anonymizer | None = None,
        anonymized: Path | str | None = None,
        *,
        resamples: int = BOOTSTRAP_RESAMPLES,
        seed: int = BOOTSTRAP_SEED,
    ) -> UtilityResult:
        """Compare the originals with ``anonymized`` (a folder laid out like the images folder) or with
        copies made in memory by ``anonymizer`` (default settings when neither is given)."""
        if anonymizer is not None and anonymized is not None:
            raise UsageError("give either an anonymizer or an anonymized folder, not both")
        started = time.perf_counter()
        folder = None
        if anonymized is not None:
            folder = Path(anonymized)
            if not folder.is_dir():
                raise UsageError(f"--anonymized {folder}: not a folder")
            _check_present(self.rows, self.labels, folder, " in the anonymized folder")
        elif anonymizer is None:
            from faceveil.anonymizer import Anonymizer

            anonymizer = Anonymizer(threads=self.threads)
        anon_scores, faces, touched, changed = self._run(anonymizer, folder)
        result = self._result(anon_scores, faces, touched, changed, resamples, seed)
        result.anonymized = _describe(anonymizer, folder)
        result.seconds = time.perf_counter() - started
        return result

    # internals ---------------------------------------------------------------------------------

    def _run(
        self, anonymizer: Anonymizer | None, folder: Path | None
    ) -> tuple[np.ndarray, list[int | None], np.ndarray, np.ndarray]:
        """One pass over the images: originals' scores (cached) and, if asked, the anonymized side's."""
        n, classes = len(self.rows), self.classifier.num_classes
        original = self._original
        fresh = original is None
        if original is None:
            original = np.full((n, classes), np.nan, np.float32)
        anon: dict[int, np.ndarray] = {}
        faces: list[int | None] = [None] * n
        touched = np.zeros(n, bool)
        changed = np.zeros(n, bool)
        record = _read_record(folder) if folder is not None else {}
        anon_digests: dict[int, str] = {}

        def done(key: tuple[str, int], scores: np.ndarray) -> None:
            side, i = key
            if side == "o":
                original[i] = scores
                digest = self._digests[i]
                if digest is not None:
                    self.cache.put(digest, scores)
            else:
                anon[i] = scores

        batcher = _Batcher(self.classifier, self.batch_size, done)
        for i, row in enumerate(self._iterate()):
            data = _read_bytes(row.path, row, self.labels)
            digest = hashlib.sha256(data).hexdigest()
            self._digests[i] = digest
            need_original = fresh
            if fresh:
                cached = self.cache.get(digest, classes)
                if cached is not None:
                    original[i] = cached
                    need_original = False
            picture = None
            if need_original or anonymizer is not None:
                picture = _decode(row.path, row, self.labels)
            if need_original:
                batcher.add(("o", i), picture.rgb8())
            if anonymizer is not None:
                rgb = picture.rgb8()
                found = anonymizer.detect(rgb)
                faces[i] = len(found)
                if found:
                    pixels = picture.pixels.copy()
                    anonymizer.hide(pixels, found)
                    touched[i] = changed[i] = True
                    batcher.add(("a", i), _rgb8(pixels))
            elif folder is not None:
                other = folder / row.file
                other_data = _read_bytes(other, row, self.labels)
                faces[i] = record.get(row.file)
                if other_data != data:
                    other_picture = _decode(other, row, self.labels)
                    picture = picture or _decode(row.path, row, self.labels)
                    a, b = other_picture.rgb8(), picture.rgb8()
                    changed[i] = a.shape != b.shape or not np.array_equal(a, b)
                    if changed[i]:
                        other_digest = hashlib.sha256(other_data).hexdigest()
                        cached = self.cache.get(other_digest, classes)
                        if cached is not None:
                            anon[i] = cached
                        else:
                            anon_digests[i] = other_digest
                            batcher.add(("a", i), a)
                touched[i] = bool(faces[i]) if faces[i] is not None else bool(changed[i])
        batcher.flush()
        for i, digest in anon_digests.items():
            self.cache.put(digest, anon[i])
        self._original = original
        anonymized = original.copy()
        for i, scores in anon.items():
            anonymized[i] = scores
        return anonymized, faces, touched, changed

    def _iterate(self) -> Iterable[LabelRow]:
        if not self.progress:
            return self.rows
        from tqdm import tqdm

        return tqdm(self.rows, unit="img", desc="utility", dynamic_ncols=True, file=sys.stderr)

    def _result(
        self,
        anon_scores: np.ndarray,
        faces: list[int | None],
        touched: np.ndarray,
        changed: np.ndarray,
        resamples: int,
        seed: int,
    ) -> UtilityResult:
        original = self.original_scores()
        truth = np.array([r.class_index for r in self.rows])
        k = min(5, self.classifier.num_classes)
        top1_o, top5_o = _hits(original, truth, k)
        top1_a, top5_a = _hits(anon_scores, truth, k)
        p_o = _probabilities(original)[np.arange(len(truth)), truth]
        p_a = _probabilities(anon_scores)[np.arange(len(truth)), truth]
        pred_o, pred_a = original.argmax(1), anon_scores.argmax(1)
        categories = self.classifier.categories
        if categories is None and self.classifier.num_classes == 1000:
            categories = imagenet_categories()
        outcomes = [
            ImageOutcome(
                file=row.file,
                line=row.line,
                class_index=row.class_index,
                class_name=row.class_name or _category(categories, row.class_index),
                faces=faces[i],
                touched=bool(touched[i]),
                changed=bool(changed[i]),
                top1_originals=bool(top1_o[i]),
                top1_anonymized=bool(top1_a[i]),
                top5_originals=bool(top5_o[i]),
                top5_anonymized=bool(top5_a[i]),
                predicted_originals=int(pred_o[i]),
                predicted_anonymized=int(pred_a[i]),
                true_score_originals=float(p_o[i]),
                true_score_anonymized=float(p_a[i]),
            )
            for i, row in enumerate(self.rows)
        ]
        face_counts = [f for f in faces if f is not None]
        return UtilityResult(
            **accuracies((top1_o, top1_a), (top5_o, top5_a), resamples, seed),
            model=self.classifier.name,
            anonymized={},
            mcnemar=mcnemar(top1_o, top1_a),
            touched=int(touched.sum()),
            changed=int(changed.sum()),
            faces=sum(face_counts) if face_counts else None,
            losing_classes=_losing_classes(outcomes),
            outcomes=outcomes,
            bootstrap={"resamples": resamples, "seed": seed, "level": CI_LEVEL, "paired": True},
            categories=categories,
        )


def evaluate_utility(
    images: Path | str,
    labels: Path | str,
    anonymizer: Anonymizer | None = None,
    anonymized: Path | str | None = None,
    *,
    model: str | Path | Classifier = BUILTIN,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    **options: Any,
) -> UtilityResult:
    """One evaluation; for several settings on the same images keep a :class:`UtilityEvaluator` instead.

    ``options`` go to :class:`UtilityEvaluator` (``cache_dir``, ``limit``, ``threads``, ``batch_size``, ...).
    """
    evaluator = UtilityEvaluator(images, labels, model, **options)
    return evaluator.evaluate(anonymizer, anonymized, resamples=resamples, seed=seed)


# --- helpers -------------------------------------------------------------------------------------


def _read_bytes(path: Path, row: LabelRow, labels: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"{labels}:{row.line}: {row.file} is listed but {path} does not exist") from exc
    except OSError as exc:
        raise FaceveilError(
            f"{path}: cannot read the file ({exc.strerror or exc}; listed on {labels}:{row.line})"
        ) from exc


def _decode(path: Path, row: LabelRow, labels: Path) -> Any:
    from faceveil.io.image import read_picture

    try:
        return read_picture(path)
    except InputError as exc:
        raise FaceveilError(f"{path}: {exc} (listed on {labels}:{row.line})") from exc


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any picture array (as ``Picture.rgb8``)."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])


def _read_record(folder: Path) -> dict[str, int]:
    """Faces hidden per path from the folder's faces.jsonl (a ``faceveil run`` output), if there is one."""
    path = folder / "faces.jsonl"
    counts: dict[str, int] = {}
    if not path.is_file():
        return counts
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if entry.get("status") == "ok" and isinstance(entry.get("path"), str):
                counts[entry["path"]] = len(entry.get("faces") or [])
    return counts


def _hits(scores: np.ndarray, truth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: true class ranked first, and within the first ``k``."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return scores.argmax(1) == truth, (top == truth[:, None]).any(axis=1)


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax of the scores, unless they already are probabilities (non-negative rows summing to 1)."""
    scores = scores.astype(np.float64)
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _category(categories: list[str] | None, index: int) -> str:
    if categories is not None and 0 <= index < len(categories):
        return categories[index]
    return f"class {index}"


def _losing_classes(outcomes: list[ImageOutcome]) -> list[ClassLoss]:
    """Classes whose top-1 count fell, most lost first (ties: larger drop of the true class's probability)."""
    by_class: dict[int, list[ImageOutcome]] = {}
    for o in outcomes:
        by_class.setdefault(o.class_index, []).append(o)
    losses = []
    for index, items in by_class.items():
        before = sum(o.top1_originals for o in items)
        after = sum(o.top1_anonymized for o in items)
        if before <= after:
            continue
        losses.append(
            ClassLoss(
                class_index=index,
                class_name=items[0].class_name,
                images=len(items),
                top1_originals=before,
                top1_anonymized=after,
                lost=sum(o.top1_originals and not o.top1_anonymized for o in items),
                gained=sum(o.top1_anonymized and not o.top1_originals for o in items),
                faces=sum(o.faces or 0 for o in items),
                probability_drop=float(
                    np.mean([o.true_score_originals - o.true_score_anonymized for o in items])
                ),
                files=[o.file for o in items if o.top1_originals and not o.top1_anonymized],
            )
        )
    losses.sort(key=lambda c: (-c.net_loss, -c.probability_drop, c.class_index))
    return losses


def _describe(anonymizer: Anonymizer | None, folder: Path | None) -> dict[str, Any]:
    if folder is not None:
        record = folder / "faces.jsonl"
        return {
            "source": "folder",
            "folder": str(folder),
            "record": str(record) if record.is_file() else None,
        }
    assert anonymizer is not None
    return {
        "source": "memory",
        "detector": getattr(anonymizer.detector, "name", type(anonymizer.detector).__name__),
        "method": getattr(anonymizer.method, "name", type(anonymizer.method).__name__),
        "shape": anonymizer.shape,
        "margin": anonymizer.margin,
        "threshold": anonymizer.threshold,
    }


# --- report --------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _points(drop: float, ci: tuple[float, float]) -> str:
    return f"{100 * drop:.1f} ({100 * ci[0]:.1f} to {100 * ci[1]:.1f})"


def _p(value: float) -> str:
    return f"{value:.3g}" if value >= 1e-3 or value == 0 else f"{value:.2e}"


def _source_line(result: UtilityResult) -> str:
    a = result.anonymized
    if a.get("source") == "folder":
        extra = f", faces from {a['record']}" if a.get("record") else ", touched = pixels changed"
        return f"anonymized: folder {a['folder']}{extra}"
    threshold = "detector default" if a.get("threshold") is None else a["threshold"]
    return (
        f"anonymized: in memory, detector {a.get('detector')}, method {a.get('method')}, "
        f"shape {a.get('shape')}, margin {a.get('margin')}, threshold {threshold}"
    )


def _report(r: UtilityResult, top: int, markdown: bool) -> str:
    m = r.mcnemar
    faces = "" if r.faces is None else f", {r.faces} faces hidden"
    touched = f"{_pct(r.touched_share)} of images ({r.touched} of {r.images}{faces})"
    mcn = (
        f"p = {_p(m.p_value)} ({m.test}; {m.correct_to_wrong} correct->wrong, "
        f"{m.wrong_to_correct} wrong->correct)"
    )
    ci = f"drop, points ({int(CI_LEVEL * 100)} % paired bootstrap CI)"
    names = r._namer()
    losing = r.losing_classes[:top]
    lines: list[str] = []
    if markdown:
        lines += [
            f"# faceveil eval utility: {r.model} on {r.images} images",
            "",
            _source_line(r),
            "",
            f"| figure | originals | anonymized | {ci} |",
            "|---|---|---|---|",
            f"| top1 | {_pct(r.top1_originals)} | {_pct(r.top1_anonymized)} "
            f"| {_points(r.top1_drop, r.top1_drop_ci)} |",
            f"| top5 | {_pct(r.top5_originals)} | {_pct(r.top5_anonymized)} "
            f"| {_points(r.top5_drop, r.top5_drop_ci)} |",
            "",
            f"- touched: {touched}",
            f"- mcnemar: {mcn}",
            "",
            f"## losing_classes ({len(losing)} of {len(r.losing_classes)})",
            "",
            "| class | images | top1 originals | top1 anonymized | faces | now predicted | files |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in losing:
            now = _now_predicted(r, c, names)
            lines.append(
                f"| {c.class_name} ({c.class_index}) | {c.images} | {c.top1_originals} | {c.top1_anonymized} "
                f"| {c.faces} | {now} | {', '.join(c.files)} |"
            )
        return "\n".join(lines) + "\n"
    lines += [
        f"faceveil eval utility: {r.model} on {r.images} images",
        _source_line(r),
        "",
        f"{'figure':<8} {'originals':>10} {'anonymized':>11}   {ci}",
        f"{'top1':<8} {_pct(r.top1_originals):>10} {_pct(r.top1_anonymized):>11}   "
        f"{_points(r.top1_drop, r.top1_drop_ci)}",
        f"{'top5':<8} {_pct(r.top5_originals):>10} {_pct(r.top5_anonymized):>11}   "
        f"{_points(r.top5_drop, r.top5_drop_ci)}",
        f"{'touched':<8} {touched}",
        f"{'mcnemar':<8} {mcn}",
    ]
    if r.losing_classes:
        lines += ["", f"losing_classes ({len(losing)} of {len(r.losing_classes)}, most lost first):"]
        for c in losing:
            lines.append(
                f"  {c.class_name} ({c.class_index}): top1 {c.top1_originals}/{c.images} -> "
                f"{c.top1_anonymized}/{c.images}, {c.faces} faces hidden, now {_now_predicted(r, c, names)}"
            )
    return "\n".join(lines) + "\n"


def _now_predicted(r: UtilityResult, c: ClassLoss, names: Callable[[int], str]) -> str:
    flipped = [o for o in r.outcomes if o.file in set(c.files)]
    return ", ".join(sorted({names(o.predicted_anonymized) for o in flipped})) or "-"
