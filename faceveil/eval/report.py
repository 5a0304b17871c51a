"""The detection report: a precision-recall plot, protection by face size, Markdown and HTML pages."""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from faceveil.errors import MissingExtraError
from faceveil.eval.detection import DetectionResult, SetResult, pixel_inclusive
from faceveil.io.atomic import atomic_path

AGREEMENT = 0.01
"""How close faceveil's AP and the official WIDER algorithm's AP must be."""
COLOURS = {"easy": "#2a9d8f", "medium": "#e9a03b", "hard": "#d1495b", "all": "#3a6ea5"}
SIZE_LABELS = {"<16": "< 16 px", "16-32": "16-32 px", "32-64": "32-64 px", ">64": "64 px and up"}
PR_PNG = "pr_curve.png"
SIZE_PNG = "protected_by_size.png"


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError("the evaluation report's plots", "eval") from exc
    return plt


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _colour(name: str) -> str:
    return COLOURS.get(name, "#555555")


# --- plots ------------------------------------------------------------------------------------------------


def plot_pr(result: DetectionResult, path: Path) -> None:
    """Precision-recall curve of each set, with its operating point."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for name, s in result.sets.items():
        if not len(s.curve_recall):
            continue
        rec, prec = _thin(s.curve_recall, s.curve_precision)
        ax.plot(
            rec, prec, color=_colour(name), linewidth=2, label=f"{name}: AP {_fmt(s.ap)} ({s.faces} faces)"
        )
        if math.isfinite(s.recall) and math.isfinite(s.curve_point_precision):
            ax.plot(
                s.recall,
                s.curve_point_precision,
                "o",
                color=_colour(name),
                markersize=8,
                markeredgecolor="black",
            )
    ax.plot(
        [],
        [],
        "o",
        color="white",
        markeredgecolor="black",
        label=f"operating point ({result.operating_threshold})",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (share of faces found, IoU >= 0.5)")
    ax.set_ylabel("precision")
    ax.set_title(f"{result.dataset.root.name}: {result.detector} detector")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    _save(fig, path, plt)


def plot_by_size(result: DetectionResult, path: Path) -> None:
    """``protected`` by ground-truth face height, one bar per set, with the face counts."""
    plt = _pyplot()
    bins = list(SIZE_LABELS)
    names = list(result.sets)
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=120)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        s = result.sets[name]
        xs = np.arange(len(bins)) + (i - (len(names) - 1) / 2) * width
        shares = [s.by_size[b]["protected"] if s.by_size[b]["faces"] else 0.0 for b in bins]
        bars = ax.bar(
            xs, shares, width * 0.95, color=_colour(name), label=f"{name}: {_fmt(s.protected)} overall"
        )
        for bar, b in zip(bars, bins, strict=True):
            n = int(s.by_size[b]["faces"])
            text = f"{s.by_size[b]['protected']:.2f}\nn={n}" if n else "n=0"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, text, ha="center", fontsize=7)
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.set_xticks(np.arange(len(bins)), [SIZE_LABELS[b] for b in bins])
    ax.set_ylim(0, 1.18)
    ax.set_xlabel("ground-truth face height")
    ax.set_ylabel("protected (share of faces >= 80 % covered)")
    ax.set_title("Faces hidden, by size")
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=max(len(names), 1), fontsize=8, frameon=False
    )
    fig.tight_layout()
    _save(fig, path, plt)


def _thin(recall: np.ndarray, precision: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    if len(recall) <= points:
        return recall, precision
    idx = np.unique(np.r_[np.linspace(0, len(recall) - 1, points).astype(int), len(recall) - 1])
    return recall[idx], precision[idx]


def _save(fig: Any, path: Path, plt: Any) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# --- pages ------------------------------------------------------------------------------------------------


def write_report(
    result: DetectionResult, out: Path, formats: tuple[str, ...] = ("md", "html")
) -> dict[str, Path]:
    """Write the plots and the report pages into ``out``; returns what was written by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"pr_curve": out / PR_PNG, "protected_by_size": out / SIZE_PNG}
    plot_pr(result, written["pr_curve"])
    plot_by_size(result, written["protected_by_size"])
    if "md" in formats:
        written["markdown"] = out / "report.md"
        _write_text(written["markdown"], markdown(result))
    if "html" in formats:
        written["html"] = out / "report.html"
        _write_text(written["html"], html_page(result, out))
    return written


def write_json(data: dict[str, Any], path: Path) -> None:
    _write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _headline(result: DetectionResult) -> str:
    ds = result.dataset
    fmt = {"wider": "WIDER FACE", "voc": "Pascal VOC", "coco": "COCO"}.get(ds.format, ds.format)
    return (
        f"`{result.detector}` detector (operating threshold: {result.operating_threshold}), "
        f"{result.shape} regions with margin {result.margin:g}; {len(ds.images)} images, {fmt} annotations; "
        f"{result.seconds:.0f} s; {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    )


def _verdict(result: DetectionResult) -> str:
    """One sentence a reader takes away."""
    parts = []
    for name, s in result.sets.items():
        if not s.faces:
            continue
        missed = s.faces - s.protected_faces
        parts.append(f"{name}: {s.protected_faces} of {s.faces} faces hidden ({missed} not)")
    worst = None
    for name, s in result.sets.items():
        for b, v in s.by_size.items():
            if (
                v["faces"] >= 20
                and math.isfinite(v["protected"])
                and (worst is None or v["protected"] < worst[2])
            ):
                worst = (name, b, v["protected"], v["faces"])
    text = "; ".join(parts) + "."
    if worst and worst[2] < 1.0:
        text += (
            f" Weakest size band: {SIZE_LABELS[worst[1]]} faces in {worst[0]} "
            f"({worst[2]:.1%} of {int(worst[3])} protected)."
        )
    return text


def _agreement_rows(result: DetectionResult) -> list[tuple[str, float, float, float]]:
    return [
        (name, s.ap, s.official_ap, s.ap - s.official_ap)
        for name, s in result.sets.items()
        if s.official_ap is not None
    ]


def markdown(result: DetectionResult) -> str:
    """The report as Markdown (the plots are linked beside it)."""
    lines = [
        f"# Face detection on {result.dataset.root.name}",
        "",
        _headline(result),
        "",
        f"**{_verdict(result)}**",
        "",
    ]
    lines += [
        "| set | faces | AP | recall | precision | protected |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in result.sets.items():
        lines.append(
            f"| {name} | {s.faces} | {_fmt(s.ap)} | {_fmt(s.recall)} | {_fmt(s.precision)} "
            f"| **{_fmt(s.protected)}** |"
        )
    lines += ["", f"![precision-recall curve]({PR_PNG})", ""]
    lines += [
        "## Protected by face size",
        "",
        "Share of faces hidden (>= 80 % covered), by ground-truth height; face count in brackets.",
        "",
    ]
    lines += ["| set | " + " | ".join(SIZE_LABELS.values()) + " |", "|---|" + "---:|" * len(SIZE_LABELS)]
    for name, s in result.sets.items():
        cells = [
            f"{_fmt(s.by_size[b]['protected'])} ({int(s.by_size[b]['faces'])})"
            if s.by_size[b]["faces"]
            else "-"
            for b in SIZE_LABELS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Recall (found at IoU >= 0.5) by the same sizes:", ""]
    lines += ["| set | " + " | ".join(SIZE_LABELS.values()) + " |", "|---|" + "---:|" * len(SIZE_LABELS)]
    for name, s in result.sets.items():
        cells = [_fmt(s.by_size[b]["recall"]) if s.by_size[b]["faces"] else "-" for b in SIZE_LABELS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"![protected by face size]({SIZE_PNG})", ""]
    rows = _agreement_rows(result)
    if rows:
        ok = all(abs(d) <= AGREEMENT for *_, d in rows)
        lines += [
            "## Agreement with WIDER FACE's official evaluation",
            "",
            "The same detections scored by an independent re-implementation of the official evaluation "
            "(`faceveil/eval/wider_official.py`: official .mat ground truth, score normalisation, "
            "1000 thresholds).",
            "",
            "| set | AP (faceveil) | AP (official algorithm) | difference |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {n} | {_fmt(a, 4)} | {_fmt(o, 4)} | {d:+.4f} |" for n, a, o, d in rows]
        lines += ["", f"Agreement within {AGREEMENT}: **{'yes' if ok else 'NO'}**.", ""]
    if result.dataset.warnings:
        lines += ["## Notes on the annotations", ""]
        lines += [f"- {w}" for w in result.dataset.warnings[:50]]
        if len(result.dataset.warnings) > 50:
            lines.append(f"- ... and {len(result.dataset.warnings) - 50} more")
        lines.append("")
    lines += ["## What the figures mean", "", *[f"- {d}" for d in definitions(result)], ""]
    return "\n".join(lines)


def definitions(result: DetectionResult) -> list[str]:
    boxes = (
        "pixel-inclusive boxes (one pixel added to width and height, "
        "as the format's official evaluation does)"
        if pixel_inclusive(result.dataset)
        else "continuous boxes (as COCO's evaluation does)"
    )
    return [
        "**AP**: area under the precision-recall curve of every detection down to score "
        f"{result.low_score:g}; a detection finds the face it overlaps most at IoU >= 0.5 on {boxes}; "
        "detections of ignored faces (WIDER: faces outside the set, invalid ones; VOC: difficult; "
        "COCO: ignore/iscrowd) count neither way (WIDER's rule).",
        "**recall**: share of the set's faces found at the operating threshold, by the same matching.",
        "**precision**: share of hidden regions whose detector box has IoU >= 0.5 with some "
        "ground-truth face, ignored ones included (the contract's definition).",
        "**protected**: share of the set's faces whose box is at least 80 % covered by the hidden regions, "
        f"with the run's settings ({result.shape}, margin {result.margin:g}).",
        f"**operating threshold**: {result.operating_threshold} "
        "(what `faceveil run` uses with these options).",
    ]


def html_page(result: DetectionResult, out: Path) -> str:
    """The report as one self-contained HTML page (plots embedded)."""
    e = html.escape

    def img(name: str, alt: str) -> str:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'

    def bar(value: float, colour: str) -> str:
        if not math.isfinite(value):
            return "-"
        return (
            f'<span class="bar"><span style="width:{value * 100:.1f}%;background:{colour}"></span></span>'
            f" {value:.3f}"
        )

    rows = "".join(
        f"<tr><th>{e(n)}</th><td>{s.faces}</td><td>{_fmt(s.ap)}</td><td>{_fmt(s.recall)}</td>"
        f"<td>{_fmt(s.precision)}</td><td>{bar(s.protected, _colour(n))}</td></tr>"
        for n, s in result.sets.items()
    )
    size_rows = "".join(
        f"<tr><th>{e(n)}</th>"
        + "".join(
            f"<td>{bar(s.by_size[b]['protected'], _colour(n))} "
            f"<small>({int(s.by_size[b]['faces'])})</small></td>"
            if s.by_size[b]["faces"]
            else "<td>-</td>"
            for b in SIZE_LABELS
        )
        + "</tr>"
        for n, s in result.sets.items()
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Face detection on {e(result.dataset.root.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Face detection on {e(result.dataset.root.name)}</h1>",
        f"<p class='meta'>{e(_headline(result)).replace('`', '')}</p>",
        f"<p class='verdict'>{e(_verdict(result))}</p>",
        "<table><tr><th>set</th><th>faces</th><th>AP</th><th>recall</th><th>precision</th><th>protected</th></tr>",
        rows,
        "</table>",
        img(PR_PNG, "precision-recall curve"),
        "<h2>Protected by face size</h2>",
        "<table><tr><th>set</th>" + "".join(f"<th>{e(v)}</th>" for v in SIZE_LABELS.values()) + "</tr>",
        size_rows,
        "</table>",
        img(SIZE_PNG, "protected by face size"),
    ]
    agreement = _agreement_rows(result)
    if agreement:
        ok = all(abs(d) <= AGREEMENT for *_, d in agreement)
        parts += [
            "<h2>Agreement with WIDER FACE's official evaluation</h2>",
            "<p>The same detections scored by an independent re-implementation "
            "of the official evaluation.</p>",
            "<table><tr><th>set</th><th>AP (faceveil)</th><th>AP (official algorithm)</th>"
            "<th>difference</th></tr>",
            "".join(
                f"<tr><th>{e(n)}</th><td>{_fmt(a, 4)}</td><td>{_fmt(o, 4)}</td><td>{d:+.4f}</td></tr>"
                for n, a, o, d in agreement
            ),
            "</table>",
            f"<p class='{'ok' if ok else 'bad'}'>Agreement within {AGREEMENT}: {'yes' if ok else 'NO'}.</p>",
        ]
    if result.dataset.warnings:
        parts.append("<h2>Notes on the annotations</h2><ul>")
        parts += [f"<li>{e(w)}</li>" for w in result.dataset.warnings[:50]]
        parts.append("</ul>")
    parts.append("<h2>What the figures mean</h2><ul>")
    parts += [f"<li>{e(d).replace('**', '')}</li>" for d in definitions(result)]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; font-size: 0.9rem; }
.verdict { font-size: 1.1rem; font-weight: 600; }
table { border-collapse: collapse; margin: 1rem 0; } th, td { padding: 0.3rem 0.7rem; text-align: right; }
tr:nth-child(even) { background: #f5f5f5; } th:first-child { text-align: left; }
.bar { display: inline-block; width: 5rem; height: 0.7rem; background: #e5e5e5; vertical-align: middle; }
.bar span { display: block; height: 100%; }
img { max-width: 100%; display: block; margin: 1rem 0; }
.ok { color: #1b7a3a; font-weight: 600; } .bad { color: #b00020; font-weight: 600; }
"""


def summary_table(result: DetectionResult) -> str:
    """Plain text for the terminal."""
    lines = [f"{'set':<8}{'faces':>7}{'AP':>8}{'recall':>8}{'prec.':>8}{'protected':>11}"]
    for name, s in result.sets.items():
        lines.append(
            f"{name:<8}{s.faces:>7}{_fmt(s.ap):>8}{_fmt(s.recall):>8}{_fmt(s.precision):>8}{_fmt(s.protected):>11}"
        )
    rows = _agreement_rows(result)
    if rows:
        lines.append("official WIDER AP: " + ", ".join(f"{n} {_fmt(o, 4)} ({d:+.4f})" for n, _, o, d in rows))
    return "\n".join(lines)


__all__ = ["SetResult", "markdown", "plot_by_size", "plot_pr", "summary_table", "write_json", "write_report"]
