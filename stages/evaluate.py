"""Stage two, ``evaluate``: score a trained run on another dataset, or score a predictions file.

* :func:`run_evaluate`: load every split model of a ``train`` run folder, build the same
  inputs (roles, T, flat branches, NaN policy as recorded in the run's ``config.json``)
  from another dataset's store and manifest, predict every labelled video, and report the
  metrics per model with their median and spread (cross-dataset evaluation).
* :func:`evaluate_predictions`: metrics of an existing ``predictions.csv`` (any tool's),
  per split and test set.

Both write ``metrics.json``, ``predictions.csv``, ``summary.txt`` and ``scatter.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.feature_table import (
    TableSpec,
    configuration_differences,
    load_table,
    mismatch_note,
    shapes_match,
)
from vqa_pipe.pipeline.metrics import safe_evaluate, summarize
from vqa_pipe.pipeline.report import (
    PredictionRow,
    RunResult,
    metric_notes,
    read_predictions,
    write_json,
    write_run_outputs,
)


class EvaluateError(VqaPipeError):
    """A run folder or predictions file that cannot be evaluated."""


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise EvaluateError(f"{run_dir} is not a training run folder (no config.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvaluateError(f"{path} is not valid JSON: {err}") from None


def _trained_on(run_dir: Path) -> set[str]:
    """Ids a run trained or validated on (from its ``splits.json``), if recorded."""
    path = run_dir / "splits.json"
    if not path.is_file():
        return set()
    try:
        splits = json.loads(path.read_text()).get("splits", [])
    except json.JSONDecodeError:
        return set()
    return {v for s in splits for part in ("train", "val") for v in s.get(part, [])}


def model_folders(run_dir: str | Path) -> list[Path]:
    """The saved split models of a run, in split order."""
    run_dir = Path(run_dir)
    models = sorted(p for p in (run_dir / "models").glob("*") if (p / "config.json").is_file())
    if not models:
        raise EvaluateError(
            f"{run_dir} holds no saved models (models/<split>/config.json); was it trained "
            "with --no-save-models?"
        )
    return models


def run_evaluate(
    run_dir: str | Path,
    store: str | Path,
    manifest: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    progress: bool | Callable[[dict], None] = False,
    allow_config_mismatch: bool = False,
):
    """Predict a dataset with every model of a training run and write the reports to ``out``.

    The dataset's features must have been extracted with the configuration the run was trained
    on (its ``config.json`` records it); otherwise the differing keys are listed and the run is
    refused, unless ``allow_config_mismatch`` (every output then says so).

    Returns the :class:`~vqa_pipe.pipeline.report.RunResult` (one "split" per model).
    """
    from vqa_pipe.pipeline.regressors import load_regressor

    run_dir = Path(run_dir)
    config = _run_config(run_dir)
    options = config.get("options", {})
    roles = config.get("roles") or []
    spec = TableSpec.from_json(options.get("spec", {}))
    spec = spec.with_layout(config.get("flat_layout"))  # the branches the models were trained on
    regressor = options.get("regressor", "?")
    folders = model_folders(run_dir)
    name = dataset or Path(manifest).stem
    table = load_table(store, manifest, roles, spec, dataset=name,
                       who=f"the '{regressor}' models of {run_dir}")
    shapes = config.get("input_shapes") or {}
    for role in roles:
        want = shapes.get(role)
        if want is not None and not shapes_match(role, table.require(role).shape[1:], want):
            raise EvaluateError(
                f"{name}: '{role}' features have shape {tuple(table.require(role).shape[1:])}, "
                f"but the run was trained on {tuple(want)}; extract with the same configuration"
            )
    notes = list(table.notes)
    trained = config.get("features")
    if trained is None:
        diffs = ["the run's config.json does not record its feature configuration (trained by "
                 "an older vqa-pipe): retrain it to check"]
    else:
        diffs = configuration_differences(trained, table.info.get("branch_configs", {}))
    if diffs and not allow_config_mismatch:
        raise EvaluateError(
            f"{name}'s features were not extracted with the configuration {run_dir} was trained "
            f"on: " + "; ".join(diffs[:8]) + (f" (and {len(diffs) - 8} more)" if len(diffs) > 8
                                              else "")
            + ". Extract it with the same settings, or pass --allow-config-mismatch (every "
            "output then says so)"
        )
    if diffs:
        notes.append(mismatch_note(name, config.get("train", {}).get("name", "?"), diffs))
    seen = _trained_on(run_dir)
    overlap = [v for v in table.video_ids if v in seen]
    if overlap:
        notes.append(
            f"{len(overlap)} of the {len(table)} videos were used for training or validation "
            "by this run (same ids): these scores are not a held-out test"
        )
    started = time.perf_counter()
    per_model, predictions, rows = [], [], []
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(folders), unit="model", desc=f"evaluate on {name}")
    try:
        for folder in folders:
            model = load_regressor(folder)
            pred = model.predict(table)
            metrics = safe_evaluate(table.mos, pred)
            per_model.append({"split": folder.name, "test_set": name, "dataset": name,
                              "metrics": metrics})
            rows.append(metrics)
            predictions.extend(
                PredictionRow(v, name, float(m), s, float(p), folder.name, name)
                for v, m, s, p in zip(table.video_ids, table.mos, table.scales, pred)
            )
            if bar is not None:
                bar.set_postfix_str(f"SROCC {metrics['srocc']:.3f}", refresh=False)
                bar.update(1)
            elif callable(progress):
                progress({"split": folder.name, "srocc": metrics["srocc"]})
    finally:
        if bar is not None:
            bar.close()
    summary = {name: summarize(rows)}
    notes.extend(metric_notes(per_model, summary))
    result = RunResult(
        regressor=regressor,
        params=config.get("resolved_params") or options.get("params", {}),
        protocol=f"trained on {config.get('train', {}).get('name', '?')}",
        dataset=name,
        per_split=per_model,
        fit_info={},
        predictions=predictions,
        summary=summary,
        notes=notes,
        seconds=time.perf_counter() - started,
    )
    _write(Path(out), result, extra={"run": str(run_dir)})
    return result


def evaluate_predictions(path: str | Path, out: str | Path | None = None) -> RunResult:
    """Metrics of a ``predictions.csv``: per (test set, split), then median and spread."""
    rows = read_predictions(path)
    if not rows:
        raise EvaluateError(f"{path} has no predictions")
    groups: dict[tuple[str, str], list[PredictionRow]] = {}
    for r in rows:
        groups.setdefault((r.test_set, r.split), []).append(r)
    per_split, by_test = [], {}
    for (test_set, split), items in groups.items():
        metrics = safe_evaluate([r.mos for r in items], [r.prediction for r in items])
        per_split.append({"split": split, "test_set": test_set,
                          "dataset": items[0].dataset, "metrics": metrics})
        by_test.setdefault(test_set, []).append(metrics)
    summary = {k: summarize(v) for k, v in by_test.items()}
    result = RunResult(
        regressor="(predictions file)",
        params={},
        protocol="",
        dataset=rows[0].dataset,
        per_split=per_split,
        fit_info={},
        predictions=rows,
        summary=summary,
        notes=metric_notes(per_split, summary),
        seconds=0.0,
    )
    if out is not None:
        _write(Path(out), result, extra={"predictions_file": str(path)})
    return result


def _write(out: Path, result: RunResult, extra: dict) -> None:
    write_run_outputs(out, result)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.update(extra)
    write_json(out / "metrics.json", metrics)


def default_out(run_dir: str | Path, dataset: str) -> Path:
    """``cross/<trained on>/<regressor>/<dataset>`` for a run folder (see ``pipeline.layout``)."""
    from vqa_pipe.pipeline.layout import Layout

    config = _run_config(Path(run_dir))
    train = config.get("train", {}).get("name") or Path(run_dir).parent.name
    regressor = config.get("options", {}).get("regressor") or Path(run_dir).name
    return Layout().cross(train, regressor, dataset)
