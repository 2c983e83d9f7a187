"""Evaluation across datasets and the report: train rows × test columns.

Reads ``runs/<train>/<regressor>/metrics.json`` (within-dataset: the median over the test
parts of the splits). With ``evaluate=True`` it first tests every split model of each run on
every other dataset (``stages.evaluate.run_evaluate``), writing
``cross/<train>/<regressor>/<test>/``; it then reads those ``metrics.json`` files and writes
into ``reports/`` (paths from ``pipeline.layout``):

- ``cross_dataset.md``: one table per regressor, median SROCC / PLCC (linear: Pearson of the
  predictions as they are, nothing fitted on the test videos); the diagonal is the
  within-dataset result (held-out test parts), the rest cross-dataset;
- ``cross_dataset.csv``: the same numbers, one row per (regressor, train, test);
- ``per_split.csv``: within-dataset SROCC and PLCC of every split (for ``dvc plots``);
- ``metrics.json``: the medians, nested by regressor, train and test (for ``dvc metrics``).

When any feature store behind the runs was made with random weights, every file says so.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.layout import Layout

RANDOM_NOTE = "RANDOM WEIGHTS: features from untrained models; these numbers are meaningless."


class ReportError(VqaPipeError):
    """A run folder the report needs is missing or unreadable."""


@dataclass(frozen=True)
class Cell:
    regressor: str
    train: str
    test: str
    srocc: float
    plcc: float
    n_splits: int
    within: bool
    plcc_logistic: float = float("nan")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ReportError(f"missing {path}: run `vqa-pipe train`/`evaluate` for it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not valid JSON ({err})") from None


WITHIN = "test"  # the test parts of a run's own splits (random, videval, konvid, official)


def _median(summary: dict, metric: str, key: str | None = None) -> float:
    """The median of ``metric`` over a run's splits for test set ``key`` (an evaluation's
    only test set when None)."""
    stats = next(iter(summary.values())) if key is None else summary[key]
    value = stats.get(metric, {}).get("median")
    return float("nan") if value is None else float(value)


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def collect(
    layout: Layout, datasets: Sequence[str], regressors: Sequence[str]
) -> tuple[list[Cell], list[dict]]:
    """Every (regressor, train, test) cell, and the per-split rows of the within-dataset runs."""
    cells, per_split = [], []
    for regressor in regressors:
        for train in datasets:
            run = layout.run(train, regressor)
            metrics = _read(run / "metrics.json")
            if WITHIN not in metrics["summary"]:
                raise ReportError(
                    f"{run} has no within-dataset test parts (protocol "
                    f"{metrics.get('protocol', '?')}: test sets "
                    f"{', '.join(metrics['summary']) or 'none'}); the report's diagonal needs "
                    "a run with held-out test parts of its own dataset"
                )
            cells.append(
                Cell(
                    regressor,
                    train,
                    train,
                    _median(metrics["summary"], "srocc", WITHIN),
                    _median(metrics["summary"], "plcc", WITHIN),
                    int(metrics["n_splits"]),
                    True,
                    _median(metrics["summary"], "plcc_logistic", WITHIN),
                )
            )
            for split in metrics["splits"]:
                if split.get("test_set", WITHIN) != WITHIN:
                    continue  # another dataset tested by the run (--test): not within
                per_split.append(
                    {
                        "dataset": train,
                        "regressor": regressor,
                        "split": split["split"],
                        "srocc": _num(split["metrics"]["srocc"]),
                        "plcc": _num(split["metrics"]["plcc"]),
                        "plcc_logistic": _num(split["metrics"].get("plcc_logistic")),
                    }
                )
            for test in datasets:
                if test == train:
                    continue
                other = _read(layout.cross(train, regressor, test) / "metrics.json")
                cells.append(
                    Cell(
                        regressor,
                        train,
                        test,
                        _median(other["summary"], "srocc"),
                        _median(other["summary"], "plcc"),
                        int(other["n_splits"]),
                        False,
                        _median(other["summary"], "plcc_logistic"),
                    )
                )
    return cells, per_split


def random_weight_stores(stores: Sequence[Path]) -> list[str]:
    """Stores (of those given) whose features came from random weights."""
    from vqa_pipe.pipeline.store import FeatureStore

    return [str(s) for s in stores if FeatureStore.open(s).random_weights]


def markdown(cells: Sequence[Cell], datasets: Sequence[str], random_stores: Sequence[str]) -> str:
    lines = ["# Cross-dataset results", ""]
    if random_stores:
        lines += [f"**{RANDOM_NOTE}** ({', '.join(random_stores)})", ""]
    lines += [
        "Median SROCC / PLCC (linear) over splits. Rows: training dataset; columns: test "
        "dataset. The diagonal is within-dataset (held-out test parts of the random splits); "
        "the rest is cross-dataset (every split's model on the whole other dataset). PLCC "
        "(linear) is Pearson's correlation of the predictions as they are (what FAST-VQA and "
        "DOVER report); PLCC after the four-parameter logistic (VIDEVAL's convention) is in "
        "cross_dataset.csv.",
        "",
    ]
    for regressor in dict.fromkeys(c.regressor for c in cells):
        table = {(c.train, c.test): c for c in cells if c.regressor == regressor}
        lines += [
            f"## {regressor}",
            "",
            "| train \\ test | " + " | ".join(datasets) + " |",
            "|---" * (len(datasets) + 1) + "|",
        ]
        for train in datasets:
            row = [f"{table[train, t].srocc:.3f} / {table[train, t].plcc:.3f}" for t in datasets]
            lines.append(f"| {train} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def evaluate_across(
    layout: Layout,
    datasets: Sequence[str],
    regressors: Sequence[str],
    stores: dict[str, Path],
    manifests: dict[str, Path],
    log=print,
) -> None:
    """Test each run's split models on every other dataset."""
    from vqa_pipe.stages.evaluate import run_evaluate

    for regressor in regressors:
        for train in datasets:
            for test in datasets:
                if test == train:
                    continue
                log(f"evaluate {regressor} trained on {train} -> {test}")
                run_evaluate(
                    layout.run(train, regressor),
                    stores[test],
                    manifests[test],
                    layout.cross(train, regressor, test),
                    dataset=test,
                )


def run_report(
    datasets: Sequence[str],
    regressors: Sequence[str],
    *,
    out: str | Path | None = None,
    layout: Layout | None = None,
    evaluate: bool = True,
    log=print,
) -> Path:
    """Evaluate across datasets (optional) and write the report files into ``out``.

    Runs, cross-dataset evaluations, feature stores and manifests are found where
    ``pipeline.layout`` puts them. Returns the markdown file's path.
    """
    from vqa_pipe.pipeline.regressors import list_regressors

    layout = layout or Layout()
    out = Path(out) if out is not None else layout.reports()
    if not datasets or not regressors:
        raise ReportError("the report needs at least one dataset and one regressor")
    unknown = [r for r in regressors if r not in list_regressors()]
    if unknown:
        raise ReportError(
            f"unknown regressor(s) {', '.join(unknown)}; valid: {', '.join(list_regressors())}"
        )
    cross = layout.root / "cross"
    stores = {d: layout.store(d) for d in datasets}
    manifest_files = {d: layout.manifest(d) for d in datasets}
    if evaluate:
        cross.mkdir(parents=True, exist_ok=True)  # the stage's output, even with one dataset
        evaluate_across(layout, datasets, regressors, stores, manifest_files, log)
    cells, per_split = collect(layout, datasets, regressors)
    random_stores = random_weight_stores(list(stores.values()))
    out.mkdir(parents=True, exist_ok=True)
    md = out / "cross_dataset.md"
    md.write_text(markdown(cells, datasets, random_stores) + "\n")
    with open(out / "cross_dataset.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["regressor", "train", "test", "srocc", "plcc", "plcc_logistic",
                         "n_splits", "within"])
        for c in cells:
            writer.writerow(
                [
                    c.regressor,
                    c.train,
                    c.test,
                    f"{c.srocc:.6f}",
                    f"{c.plcc:.6f}",
                    f"{c.plcc_logistic:.6f}",
                    c.n_splits,
                    int(c.within),
                ]
            )
    with open(out / "per_split.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["dataset", "regressor", "split", "srocc", "plcc",
                                     "plcc_logistic"])
        writer.writeheader()
        writer.writerows(per_split)
    metrics: dict = {"random_weights": bool(random_stores)}
    for c in cells:
        metrics.setdefault(c.regressor, {}).setdefault(c.train, {})[c.test] = {
            "srocc": round(c.srocc, 6),
            "plcc": round(c.plcc, 6),
            "plcc_logistic": None if c.plcc_logistic != c.plcc_logistic
            else round(c.plcc_logistic, 6),
        }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return md
