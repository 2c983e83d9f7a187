"""The score report: one PNG per video and an index page that ranks the videos.

Each PNG reads top to bottom: the video's score (and a red RANDOM WEIGHTS line when the model
is untrained), a strip of its worst and best frames with each CLIP window shaded by the
probability of the description that moves the score most (one colour scale for all), the
per-frame curve with the shown frames marked, and the largest contributions (or, without
contributions, deviations / zero-shot attribute probabilities) as bars. Matplotlib, Agg.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CMAP = "magma"
RANDOM_LINE = "RANDOM WEIGHTS: untrained model, this score says nothing about quality"


@dataclass
class FramePanel:
    """One frame of the strip: pixels, a caption, and the window shading."""

    rgb: np.ndarray  # (H, W, 3) uint8
    caption: str
    boxes: np.ndarray | None = None  # (k, 4) top, left, bottom, right in frame pixels
    values: np.ndarray | None = None  # (k,) in [0, 1]
    shade_label: str = ""
    colour: str = "black"


@dataclass
class Bars:
    title: str
    labels: list[str]
    values: list[float]
    centre: float = 0.0  # bars grow from here (0.5 for probabilities)
    fmt: str = "{:+.2f}"
    signed_colours: bool = True  # green above the centre, red below; else one neutral colour


@dataclass
class Curve:
    times: list[float]
    values: list[float]
    ylabel: str
    title: str
    reference: float | None = None
    marks: dict[int, str] = field(default_factory=dict)  # frame index -> colour


def shade_map(shape: tuple[int, int], boxes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-pixel mean of the values of the windows covering it (NaN where none does)."""
    h, w = shape
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    for (top, left, bottom, right), v in zip(np.asarray(boxes, dtype=int), values):
        total[max(top, 0):bottom, max(left, 0):right] += float(v)
        count[max(top, 0):bottom, max(left, 0):right] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def colour_range(values: Sequence[np.ndarray]) -> tuple[float, float]:
    """One colour scale for every shaded frame of a figure: the range of the values shown
    (at least 0.02 wide, within [0, 1]), so small differences between windows stay visible;
    the colour bar gives the numbers."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    if not len(finite):
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 0.02:
        mid = (hi + lo) / 2
        lo, hi = mid - 0.01, mid + 0.01
    lo, hi = max(0.0, lo), min(1.0, hi)
    return (lo, hi) if hi > lo else (0.0, 1.0)


def video_figure(
    path: str | Path,
    *,
    title: str,
    subtitle: str,
    frames: Sequence[FramePanel],
    curve: Curve | None,
    bars: Bars | None,
    random_weights: bool,
    dpi: int = 100,
    width: float = 12.0,
) -> Path:
    """Write one video's report PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import patches

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(frames))
    fig = plt.figure(figsize=(width, width * 0.62), dpi=dpi)
    try:
        top = 0.82 if random_weights else 0.86
        outer = fig.add_gridspec(2, 1, height_ratios=[1.0, 0.85], hspace=0.38,
                                 left=0.05, right=0.94, top=top, bottom=0.08)
        strip = outer[0].subgridspec(1, n + 1, width_ratios=[1.0] * n + [0.045], wspace=0.08)
        fig.text(0.05, 0.965, title, fontsize=14, weight="bold", va="top")
        fig.text(0.05, 0.925, subtitle, fontsize=9, color="0.25", va="top")
        if random_weights:
            fig.text(0.05, 0.895, RANDOM_LINE, fontsize=10, weight="bold", color="#c00000",
                     va="top")
        shaded = [np.asarray(p.values, dtype=float) for p in frames
                  if p.boxes is not None and p.values is not None]
        vmin, vmax = colour_range(shaded)
        for i, panel in enumerate(frames):
            ax = fig.add_subplot(strip[0, i])
            ax.imshow(panel.rgb, interpolation="bilinear")
            if panel.boxes is not None and panel.values is not None:
                shade = shade_map(panel.rgb.shape[:2], panel.boxes, panel.values)
                ax.imshow(shade, cmap=CMAP, vmin=vmin, vmax=vmax, alpha=0.5,
                          interpolation="nearest")
                for t, left, b, r in np.asarray(panel.boxes, dtype=int):
                    ax.add_patch(patches.Rectangle((left - 0.5, t - 0.5), r - left, b - t,
                                                   fill=False, lw=0.6, ec="white", alpha=0.7))
            ax.set_title(panel.caption, fontsize=9, color=panel.colour)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(panel.colour)
                spine.set_linewidth(2)
            if panel.shade_label:
                ax.set_xlabel(panel.shade_label, fontsize=8)
        if not frames:
            ax = fig.add_subplot(strip[0, 0])
            ax.text(0.5, 0.5, "no frames to show", ha="center", va="center", fontsize=10)
            ax.axis("off")
        if shaded:
            cax = fig.add_subplot(strip[0, n])
            norm = matplotlib.colors.Normalize(vmin, vmax)
            cbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=CMAP), cax=cax)
            cbar.set_label("probability in the window", fontsize=8)
            cbar.ax.tick_params(labelsize=7)
            fig.text(0.94, 0.925, "white squares: CLIP's windows; unshaded pixels lie in no "
                     "window", fontsize=8, color="0.35", va="top", ha="right")
        lower = outer[1].subgridspec(1, 2, width_ratios=[1.75, 1.0], wspace=0.42)
        if curve is not None and curve.values:
            _draw_curve(fig.add_subplot(lower[0, 0]), curve)
        if bars is not None and bars.labels:
            _draw_bars(fig.add_subplot(lower[0, 1]), bars)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _draw_curve(ax, curve: Curve) -> None:
    times = np.asarray(curve.times, dtype=float)
    values = np.asarray(curve.values, dtype=float)
    ax.plot(times, values, "-o", ms=3, lw=1.2, color="C0", label="per frame")
    if curve.reference is not None and math.isfinite(curve.reference):
        ax.axhline(curve.reference, ls="--", lw=1, color="0.35", label="video score")
    for index, colour in curve.marks.items():
        if 0 <= index < len(values):
            ax.plot(times[index], values[index], "o", ms=8, mfc="none", mew=2, color=colour)
    ax.set_xlabel("time (s)", fontsize=9)
    ax.set_ylabel(curve.ylabel, fontsize=9)
    ax.set_title(curve.title, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _draw_bars(ax, bars: Bars) -> None:
    labels = list(bars.labels)[::-1]
    values = np.asarray(bars.values, dtype=float)[::-1]
    width = values - bars.centre
    colours = (["#2e7d32" if v >= 0 else "#c62828" for v in width] if bars.signed_colours
               else ["#1f77b4"] * len(width))
    ax.barh(range(len(labels)), width, left=bars.centre, color=colours, height=0.6)
    ax.axvline(bars.centre, color="0.3", lw=0.8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    span = float(np.max(np.abs(width))) if len(width) else 1.0
    span = span if span > 0 else 1.0
    ax.set_xlim(bars.centre - 1.45 * span, bars.centre + 1.45 * span)
    for y, (v, w) in enumerate(zip(values, width)):
        ax.text(v + (0.04 * span if w >= 0 else -0.04 * span), y, bars.fmt.format(v),
                va="center", ha="left" if w >= 0 else "right", fontsize=7)
    ax.set_title(bars.title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


@dataclass
class IndexRow:
    video: str
    status: str
    score: float | None
    score_100: float | None
    reasons: str
    png: str | None
    error: str = ""


def index_page(path: str | Path, rows: Sequence[IndexRow], *, title: str, scale: str,
               random_weights: bool) -> Path:
    """An HTML page ranking the videos by score (best first), failed ones last."""
    path = Path(path)
    ok = sorted((r for r in rows if r.status == "ok" and r.score is not None),
                key=lambda r: -float(r.score))
    bad = [r for r in rows if r not in ok]
    esc = html.escape
    out = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}"
        ".warn{color:#c00000;font-weight:bold}img{width:360px}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if random_weights:
        out.append(f'<p class="warn">{esc(RANDOM_LINE)}</p>')
    out.append(f"<p>{len(ok)} scored, {len(bad)} failed; ranked best first. "
               f"Scores on {esc(scale)} and on 0-100.</p>")
    out.append("<table><tr><th>rank</th><th>video</th><th>score</th><th>0-100</th>"
               "<th>why</th><th>report</th></tr>")
    for rank, r in enumerate(ok, 1):
        img = (f'<a href="{esc(r.png)}"><img src="{esc(r.png)}" alt="{esc(r.video)}"></a>'
               if r.png else "")
        out.append(
            f"<tr><td>{rank}</td><td>{esc(r.video)}</td><td>{r.score:.3f}</td>"
            f"<td>{r.score_100:.1f}</td><td>{esc(r.reasons)}</td><td>{img}</td></tr>"
        )
    for r in bad:
        out.append(f"<tr><td>-</td><td>{esc(r.video)}</td><td colspan=3>failed: "
                   f"{esc(r.error)}</td><td></td></tr>")
    out.append("</table></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
