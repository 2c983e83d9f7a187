"""Reports of a training or evaluation run: ``metrics.json``, ``predictions.csv``, scatter
plots (PNG) and a plain-text summary table.

``predictions.csv`` has one row per (split, test set, video)::

    video_id,dataset,mos,mos_scale,prediction,split,test_set

MOS and predictions are on the video's own MOS scale.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.metrics import METRICS, MIN_LOGISTIC_N, SMALL_LOGISTIC_N

PREDICTION_COLUMNS = ("video_id", "dataset", "mos", "mos_scale", "prediction", "split", "test_set")
METRIC_LABELS = {
    "srocc": "SROCC",
    "krocc": "KROCC",
    "plcc": "PLCC (linear)",
    "rmse": "RMSE",
    "plcc_logistic": "PLCC (logistic)",
    "rmse_logistic": "RMSE (logistic)",
}
"""Column labels: ``PLCC (linear)`` is Pearson of the predictions as they are (FAST-VQA /
DOVER), ``PLCC (logistic)`` after the four-parameter logistic fitted on the test part
(VIDEVAL / VQEG); see :mod:`vqa_pipe.pipeline.metrics`."""


class ReportError(VqaPipeError):
    """A predictions file that cannot be read back."""


@dataclass(frozen=True)
class PredictionRow:
    video_id: str
    dataset: str
    mos: float
    mos_scale: str
    prediction: float
    split: str
    test_set: str


def write_predictions(path: str | Path, rows: Iterable[PredictionRow]) -> Path:
    """Write ``predictions.csv``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        for r in rows:
            writer.writerow([r.video_id, r.dataset, repr(float(r.mos)), r.mos_scale,
                             repr(float(r.prediction)), r.split, r.test_set])
    return path


def read_predictions(path: str | Path) -> list[PredictionRow]:
    """Read a ``predictions.csv`` back; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"predictions file {path} does not exist")
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in ("video_id", "mos", "prediction") if c not in header]
        if missing:
            raise ReportError(f"{path}:1: missing columns {', '.join(missing)}")
        for rec in reader:
            try:
                out.append(PredictionRow(
                    video_id=rec["video_id"],
                    dataset=rec.get("dataset") or "",
                    mos=float(rec["mos"]),
                    mos_scale=rec.get("mos_scale") or "",
                    prediction=float(rec["prediction"]),
                    split=rec.get("split") or "",
                    test_set=rec.get("test_set") or "test",
                ))
            except (TypeError, ValueError):
                raise ReportError(
                    f"{path}:{reader.line_num}: MOS or prediction is not a number"
                ) from None
    return out


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write JSON with NaN as null (strict JSON readers reject NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=2) + "\n")
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def format_summary(summary: Mapping[str, Mapping[str, Mapping[str, float]]],
                   metrics: Sequence[str] = METRICS) -> str:
    """A plain-text table: one row per test set, ``median (std)`` per metric; ``splits`` is
    the number of splits, ``videos`` the (median) test videos per split."""
    header = ["test set", "splits", "videos"] + [METRIC_LABELS.get(m, m) for m in metrics]
    lines = [header]
    for test_set, stats in summary.items():
        n = max((int(s.get("n", 0)) for s in stats.values()), default=0)
        videos = max((int(s.get("n_videos", 0)) for s in stats.values()), default=0)
        row = [test_set, str(n), str(videos) if videos else "-"]
        for m in metrics:
            s = stats.get(m)
            if not s or s.get("median") is None or not math.isfinite(s["median"]):
                row.append("-")
            elif n > 1:
                row.append(f"{s['median']:.4f} ({s['std']:.4f})")
            else:
                row.append(f"{s['median']:.4f}")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = []
    for i, r in enumerate(lines):
        text.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    note = "median (std) over splits" if any(
        int(s.get("n", 0)) > 1 for st in summary.values() for s in st.values()
    ) else ""
    return "\n".join(text) + (f"\n{note}" if note else "")


def scatter_plot(
    path: str | Path,
    mos: np.ndarray,
    pred: np.ndarray,
    *,
    title: str = "",
    scale: str | None = None,
) -> Path:
    """Scatter of prediction against MOS with the fitted logistic curve, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from vqa_pipe.pipeline.metrics import fit_logistic

    mos = np.asarray(mos, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    try:
        alpha = 0.6 if len(mos) < 500 else 0.25
        ax.scatter(pred, mos, s=8, alpha=alpha, edgecolors="none")
        if len(mos) >= MIN_LOGISTIC_N and np.ptp(pred) > 0 and np.ptp(mos) > 0:
            curve = fit_logistic(pred, mos)
            xs = np.linspace(pred.min(), pred.max(), 200)
            ax.plot(xs, curve(xs), color="C3", lw=1.5,
                    label="logistic fit" if curve.fitted else "linear fit")
            ax.legend(loc="lower right", fontsize=8)
        unit = f" ({scale})" if scale else ""
        ax.set_xlabel(f"prediction{unit}")
        ax.set_ylabel(f"MOS{unit}")
        if title:
            ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_title(name: str, stats: Mapping[str, Mapping[str, float]]) -> str:
    def med(metric: str) -> str:
        value = stats.get(metric, {}).get("median")
        return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"

    return f"{name}: SROCC {med('srocc')}  PLCC (linear) {med('plcc')}"


def metric_notes(per_split: Sequence[Mapping[str, Any]],
                 summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Notes a reader of the metrics needs: logistic metrics left undefined or replaced by
    a line in some splits, and test sets too small for the logistic PLCC to mean much."""
    notes = []
    by_test: dict[str, list[Mapping[str, Any]]] = {}
    for row in per_split:
        by_test.setdefault(str(row.get("test_set", "test")), []).append(row["metrics"])
    for test, rows in by_test.items():
        undefined = [r for r in rows if r.get("n", MIN_LOGISTIC_N) < MIN_LOGISTIC_N]
        if undefined:
            notes.append(
                f"test set '{test}': PLCC/RMSE (logistic) undefined in {len(undefined)} of "
                f"{len(rows)} splits (fewer than {MIN_LOGISTIC_N} videos for a four-parameter "
                "fit)"
            )
        line = [r for r in rows if r.get("n", 0) >= MIN_LOGISTIC_N
                and not r.get("logistic_fitted", True)]
        if line:
            notes.append(
                f"test set '{test}': the logistic fit failed in {len(line)} of {len(rows)} "
                "splits; PLCC/RMSE (logistic) used a least-squares line there"
            )
        failed = [r for r in rows if r.get("error")]
        if failed:
            notes.append(f"test set '{test}': metrics could not be computed in {len(failed)} "
                         f"of {len(rows)} splits ({failed[0]['error']})")
    for test, stats in summary.items():
        n = max((int(s.get("n_videos", 0)) for s in stats.values()), default=0)
        if MIN_LOGISTIC_N <= n < SMALL_LOGISTIC_N:
            notes.append(
                f"test set '{test}': {n} videos per split; a logistic fitted on so few videos "
                "overstates PLCC (logistic) (about 0.5 at 10 videos and 0.3 at 30 for "
                "predictions with no signal): read PLCC (linear)"
            )
    return notes


@dataclass
class RunResult:
    """What a training or evaluation run produced (also written to its folder)."""

    regressor: str
    params: dict[str, Any]
    protocol: str
    dataset: str
    per_split: list[dict[str, Any]]
    fit_info: dict[str, dict[str, Any]]
    predictions: list[PredictionRow]
    summary: dict[str, dict[str, dict[str, float]]]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "regressor": self.regressor,
            "params": self.params,
            "protocol": self.protocol,
            "dataset": self.dataset,
            "n_splits": len(self.fit_info),
            "summary": self.summary,
            "splits": self.per_split,
            "fit_info": self.fit_info,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }

    def summary_text(self) -> str:
        return format_summary(self.summary)


def write_run_outputs(out: Path, result: RunResult) -> dict[str, Path]:
    """``metrics.json``, ``predictions.csv``, ``summary.txt`` and scatter plots."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": write_json(out / "metrics.json", result.to_json()),
        "predictions": write_predictions(out / "predictions.csv", result.predictions),
    }
    summary = out / "summary.txt"
    notes = "".join(f"\nnote: {n}" for n in result.notes)
    summary.write_text(result.summary_text() + notes + "\n")
    paths["summary"] = summary
    for i, (test_name, stats) in enumerate(result.summary.items()):
        rows = [r for r in result.predictions if r.test_set == test_name]
        scales = sorted({r.mos_scale for r in rows})
        name = "scatter.png" if i == 0 else f"scatter_{_slug(test_name)}.png"
        paths[name] = scatter_plot(
            out / name,
            np.array([r.mos for r in rows]),
            np.array([r.prediction for r in rows]),
            title=f"{result.regressor} on {result.dataset} → " + plot_title(test_name, stats),
            scale=scales[0] if len(scales) == 1 else None,
        )
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
