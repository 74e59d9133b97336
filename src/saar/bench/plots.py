"""Benchmark plots: dependency-free SVG always, PNG too when matplotlib is installed.

SVG is written by hand (a few rectangles, circles and labels) so the committed plots never
depend on an optional package; with matplotlib present the same data is also drawn as PNG.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["bar_svg", "scatter_svg", "write_matrix_plots"]

_W, _H, _PAD = 720, 380, 60


def bar_svg(title: str, labels: list[str], values: list[float], unit: str = "") -> str:
    """A horizontal-label bar chart as an SVG document."""
    top = max(values, default=1.0) or 1.0
    width = (_W - 2 * _PAD) / max(1, len(values))
    parts = [_head(title)]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = (_H - 2 * _PAD) * value / top
        x = _PAD + i * width + width * 0.15
        y = _H - _PAD - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width * 0.7:.1f}" height="{h:.1f}" '
            'fill="#4c78a8"/>'
        )
        parts.append(
            f'<text x="{x + width * 0.35:.1f}" y="{y - 4:.1f}" font-size="11" '
            f'text-anchor="middle">{value:,.0f}{escape(unit)}</text>'
        )
        parts.append(
            f'<text x="{x + width * 0.35:.1f}" y="{_H - _PAD + 14}" font-size="10" '
            f'text-anchor="end" transform="rotate(-30 {x + width * 0.35:.1f} '
            f'{_H - _PAD + 14})">{escape(label)}</text>'
        )
    parts.append("</svg>\n")
    return "".join(parts)


def scatter_svg(
    title: str, points: list[tuple[str, float, float]], x_label: str, y_label: str
) -> str:
    """A labelled scatter plot (x and y in their own units) as an SVG document."""
    xs = [p[1] for p in points] or [0.0]
    ys = [p[2] for p in points] or [0.0]
    x0, x1 = min([*xs, 0.0]), max([*xs, 1.0])
    y0, y1 = min(ys), max([*ys, 0.0])
    if y1 - y0 < 1e-9:
        y1 = y0 + 1.0
    pad_y = 0.1 * (y1 - y0)
    y0, y1 = y0 - pad_y, y1 + pad_y

    def px(x: float) -> float:
        return _PAD + (_W - 2 * _PAD) * (x - x0) / (x1 - x0)

    def py(y: float) -> float:
        return _H - _PAD - (_H - 2 * _PAD) * (y - y0) / (y1 - y0)

    parts = [_head(title)]
    parts.append(
        f'<text x="{_W / 2}" y="{_H - 12}" font-size="12" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{_H / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {_H / 2})">{escape(y_label)}</text>'
    )
    if y0 < 0.0 < y1:
        parts.append(
            f'<line x1="{_PAD}" x2="{_W - _PAD}" y1="{py(0):.1f}" y2="{py(0):.1f}" '
            'stroke="#999" stroke-dasharray="4"/>'
        )
    for name, x, y in points:
        colour = (
            "#e45756"
            if name.startswith("published")
            else "#9d9d9d"
            if name.startswith("ref.")
            else "#4c78a8"
        )
        parts.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{colour}"/>'
            f'<text x="{px(x) + 7:.1f}" y="{py(y) - 6:.1f}" font-size="10">{escape(name)}</text>'
        )
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + frac * (x1 - x0)
        parts.append(
            f'<text x="{px(x):.1f}" y="{_H - _PAD + 16}" font-size="10" '
            f'text-anchor="middle">{x:.2f}</text>'
        )
        y = y0 + frac * (y1 - y0)
        parts.append(
            f'<text x="{_PAD - 6}" y="{py(y) + 3:.1f}" font-size="10" '
            f'text-anchor="end">{y:+.3f}</text>'
        )
    parts.append("</svg>\n")
    return "".join(parts)


def _head(title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif">'
        f'<rect width="{_W}" height="{_H}" fill="white"/>'
        f'<text x="{_W / 2}" y="24" font-size="15" text-anchor="middle">{escape(title)}</text>'
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="black"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="black"/>'
    )


def write_matrix_plots(
    doc: dict[str, Any], out_dir: Path, stem: str, world: str | None = None
) -> list[Path]:
    """Switches per policy and the cost/quality plane (with the published rows) of one world."""
    suffix = f" ({world} world)" if world else ""
    rows: dict[str, dict[str, Any]] = doc["policies"]
    names = list(rows)
    switches = [float(rows[n]["switches"]) for n in names]
    points = [(n, float(rows[n]["cost_reduction"]), float(rows[n]["quality_delta"])) for n in names]
    points += [
        (
            f"{n} (upstream conv.)",
            float(rows[n]["cost_reduction_upstream"]),
            float(rows[n]["quality_delta"]),
        )
        for n in ("saar", "sticky")
    ]
    for name, row in doc.get("references", {}).items():
        points.append(
            (
                f"ref. {name} (upstream conv.)",
                float(row["cost_reduction_upstream"]),
                float(row["quality_delta"]),
            )
        )
    for name, row in doc["published"].items():
        if "quality_delta" in row:
            points.append(
                (f"published {name}", float(row["cost_reduction"]), float(row["quality_delta"]))
            )
    out = []
    path = out_dir / f"{stem}-switches.svg"
    path.write_text(bar_svg(f"Model switches per policy{suffix}", names, switches))
    out.append(path)
    path = out_dir / f"{stem}-pareto.svg"
    path.write_text(
        scatter_svg(
            f"Cost reduction vs quality delta (vs single-turn){suffix}",
            points,
            "cost reduction vs single-turn",
            "quality delta vs base selector",
        )
    )
    out.append(path)
    out += _matplotlib_pngs(out_dir, stem, names, switches, points, suffix=suffix)
    return out


def _matplotlib_pngs(
    out_dir: Path,
    stem: str,
    names: list[str],
    switches: list[float],
    points: list[tuple[str, float, float]],
    *,
    suffix: str = "",
) -> list[Path]:
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return []
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, switches)
    ax.set_title(f"Model switches per policy{suffix}")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    bars = out_dir / f"{stem}-switches.png"
    fig.savefig(bars, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, x, y in points:
        ax.scatter([x], [y], color="tab:red" if name.startswith("published") else "tab:blue")
        ax.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("cost reduction vs single-turn")
    ax.set_ylabel("quality delta vs base selector")
    fig.tight_layout()
    pareto = out_dir / f"{stem}-pareto.png"
    fig.savefig(pareto, dpi=120)
    plt.close(fig)
    return [bars, pareto]
