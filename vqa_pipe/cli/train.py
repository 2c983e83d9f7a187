"""``vqa-pipe train`` and ``vqa-pipe evaluate``: stage two on cached features."""

from __future__ import annotations

from pathlib import Path

import click

PROTOCOLS = ("random", "konvid", "official", "cross")
NAN_POLICIES = ("drop", "error", "zero", "mean")


def _regressor_names() -> list[str]:
    from vqa_pipe.pipeline.regressors import list_regressors

    return list_regressors()


def _parse_params(ctx, param, values) -> dict:
    from vqa_pipe.pipeline.regressors import RegressorError, parse_param

    out = {}
    for text in values:
        try:
            key, value = parse_param(text)
        except RegressorError as err:
            raise click.BadParameter(str(err)) from None
        out[key] = value
    return out


def _params_from_file(spec: str) -> dict:
    """The mapping at ``KEY.PATH`` of a YAML file (``FILE[:KEY.PATH]``); empty or null -> {}."""
    import yaml

    path, _, key = spec.partition(":")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as err:
        raise click.BadParameter(f"cannot read {path}: {err.strerror}",
                                 param_hint="--param-file") from None
    for part in filter(None, key.split(".")):
        if not isinstance(data, dict) or part not in data:
            raise click.BadParameter(f"{path} has no key '{key}'", param_hint="--param-file")
        data = data[part]
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{spec} is not a mapping of parameters",
                                 param_hint="--param-file")
    return dict(data)


def _parse_lists(ctx, param, values) -> dict:
    out = {}
    for text in values:
        if "=" not in text:
            raise click.BadParameter(f"expected NAME=FILE, got {text!r}")
        name, path = text.split("=", 1)
        out[name.strip()] = Path(path)
    return out


def _parse_branches(ctx, param, value):
    if not value:
        return None
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def _manifest(dataset: str | None, manifest: Path | None) -> Path:
    if bool(dataset) == bool(manifest):
        raise click.UsageError("give exactly one of --dataset NAME or --manifest CSV")
    path = manifest or Path("manifests") / f"{dataset}.csv"
    if not path.is_file():
        raise click.UsageError(f"manifest not found: {path}")
    return path


def _errors():
    from vqa_pipe.pipeline.feature_table import FeatureError
    from vqa_pipe.pipeline.manifest import ManifestError
    from vqa_pipe.pipeline.regressors import RegressorError
    from vqa_pipe.pipeline.report import ReportError
    from vqa_pipe.pipeline.splits import SplitError
    from vqa_pipe.pipeline.store import StoreError
    from vqa_pipe.stages.evaluate import EvaluateError
    from vqa_pipe.stages.train import TrainError

    return (FeatureError, ManifestError, RegressorError, ReportError, SplitError, StoreError,
            EvaluateError, TrainError)


class _LazyChoice(click.Choice):
    """A Choice whose values come from the regressor registry (no heavy imports)."""

    def __init__(self) -> None:
        super().__init__(_regressor_names())


@click.command("train")
@click.option("--store", "store_path", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Feature store of the training dataset.")
@click.option("--dataset", help="Dataset name: reads manifests/<dataset>.csv.")
@click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest CSV the store was made from (instead of --dataset).")
@click.option("--regressor", type=_LazyChoice(), default="svr", show_default=True,
              help="Regressor from the registry.")
@click.option("--param", "params", multiple=True, callback=_parse_params,
              help="Regressor parameter KEY=VALUE (repeatable; VALUE read as JSON if it parses).")
@click.option("--param-file", "param_file", metavar="FILE[:KEY.PATH]",
              help="Regressor parameters from a YAML mapping, e.g. params.yaml:regressor.svr "
                   "(what dvc.yaml uses); --param entries win over it.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="random", show_default=True,
              help="random splits, KoNViD permutations, official lists, or cross-dataset only.")
@click.option("--splits", "n_splits", default=10, show_default=True, type=click.IntRange(1),
              help="Number of splits (seeds for 'official' and 'cross').")
@click.option("--test-ratio", default=0.2, show_default=True, type=click.FloatRange(0, 1),
              help="Test share of each random split.")
@click.option("--val-ratio", default=0.2, show_default=True, type=click.FloatRange(0, 1),
              help="Validation share carved from training (choices are made on it).")
@click.option("--seed", default=0, show_default=True, type=int, help="First split seed.")
@click.option("--konvid-info", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="KoNViD-1kinfo.mat (protocol konvid).")
@click.option("--split-start", default=0, show_default=True, type=click.IntRange(0),
              help="First KoNViD permutation to use.")
@click.option("--official-list", "official_lists", multiple=True, callback=_parse_lists,
              help="NAME=labels.txt for protocol official: train=... and test sets, e.g. "
                   "test=labels_test.txt test-1080p=labels_1080p.txt.")
@click.option("--allow-missing", is_flag=True,
              help="Leave out split-file videos that have no features (they are counted).")
@click.option("--test", "tests", multiple=True, nargs=3,
              type=(str, click.Path(exists=True, file_okay=False, path_type=Path),
                    click.Path(exists=True, dir_okay=False, path_type=Path)),
              help="NAME STORE MANIFEST of another dataset to test every model on (repeatable).")
@click.option("--features", "flat_branches", callback=_parse_branches,
              help="Branches pooled for svr/ridge, comma-separated (default: all in the store), "
                   "e.g. semantic,videval for the 'CNN+VIDEVAL' rows.")
@click.option("--frames", "n_frames", default=16, show_default=True, type=click.IntRange(1),
              help="T: frames per video after resampling (mlp, gru, fused).")
@click.option("--nan-policy", type=click.Choice(NAN_POLICIES), default="drop",
              show_default=True,
              help="Videos with NaN features: drop (counted), error, impute zero, or impute the "
                   "training mean.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="Splits trained in parallel worker processes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default runs/<dataset>-<regressor>-<protocol>).")
@click.option("--no-save-models", is_flag=True, help="Do not save the split models.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train(store_path, dataset, manifest_path, regressor, params, param_file, protocol, n_splits,
          test_ratio,
          val_ratio, seed, konvid_info, split_start, official_lists, allow_missing, tests,
          flat_branches, n_frames, nan_policy, jobs, out_dir, no_save_models, no_progress):
    """Stage two: train a regressor on cached features and evaluate it under the protocol.

    Writes the run folder: config.json, splits.json, metrics.json (median and spread over
    splits), predictions.csv, summary.txt, scatter plots and models/<split>/.
    """
    from vqa_pipe.pipeline.feature_table import TableSpec
    from vqa_pipe.stages.train import DatasetRef, TrainOptions, run_train

    manifest = _manifest(dataset, manifest_path)
    name = dataset or manifest.stem
    out = out_dir or Path("runs") / f"{name}-{regressor}-{protocol}"
    if param_file:
        params = {**_params_from_file(param_file), **params}
    try:
        opts = TrainOptions(
            regressor=regressor, params=params, protocol=protocol, n_splits=n_splits,
            test_ratio=test_ratio, val_ratio=val_ratio, seed=seed, konvid_info=konvid_info,
            split_start=split_start, official_lists=official_lists,
            allow_missing=allow_missing,
            spec=TableSpec(flat_branches=flat_branches, n_frames=n_frames,
                           nan_policy=nan_policy),
            jobs=jobs, save_models=not no_save_models,
        )
        refs = [DatasetRef(store=s, manifest=m, name=n) for n, s, m in tests]
        result = run_train(DatasetRef(store=store_path, manifest=manifest, name=name), out, opts,
                           refs, progress=not no_progress)
    except _errors() as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{regressor} on {name}, protocol {protocol}, {len(result.fit_info)} splits, "
               f"{result.seconds:.1f} s")
    click.echo(result.summary_text())
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"run folder: {out}")


@click.command("evaluate")
@click.argument("run_dir", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--store", "store_path", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path),
              help="Feature store of the dataset to evaluate on.")
@click.option("--dataset", help="Dataset name: reads manifests/<dataset>.csv.")
@click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest CSV of that dataset (instead of --dataset).")
@click.option("--predictions", "predictions_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Score a predictions.csv instead (columns video_id, mos, prediction[, split, "
                   "test_set]).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default RUN_DIR/eval-<dataset>).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def evaluate(run_dir, store_path, dataset, manifest_path, predictions_path, out_dir,
             no_progress):
    """Evaluate the models of a training RUN_DIR on another dataset (cross-dataset), or
    score an existing --predictions file. Writes metrics.json, predictions.csv, summary.txt
    and scatter.png."""
    from vqa_pipe.stages.evaluate import evaluate_predictions, run_evaluate

    try:
        if predictions_path is not None:
            if run_dir or store_path:
                raise click.UsageError("--predictions is used alone (no RUN_DIR or --store)")
            result = evaluate_predictions(predictions_path, out_dir)
        else:
            if run_dir is None or store_path is None:
                raise click.UsageError("give RUN_DIR and --store (or --predictions CSV)")
            manifest = _manifest(dataset, manifest_path)
            name = dataset or manifest.stem
            out = out_dir or run_dir / f"eval-{name}"
            result = run_evaluate(run_dir, store_path, manifest, out, dataset=name,
                                  progress=not no_progress)
            out_dir = out
    except _errors() as err:
        raise click.ClickException(str(err)) from None
    click.echo(result.summary_text())
    for note in result.notes:
        click.echo(f"note: {note}")
    if out_dir:
        click.echo(f"written to {out_dir}")


COMMANDS = [train, evaluate]
