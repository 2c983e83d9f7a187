"""``vqa-pipe train`` and ``vqa-pipe evaluate``: stage two on cached features."""

from __future__ import annotations

from pathlib import Path

import click

from vqa_pipe.cli.options import LazyChoice, dataset_options

PROTOCOLS = ("random", "konvid", "official", "cross")
NAN_POLICIES = ("drop", "error", "zero", "mean")


def _regressor_names() -> list[str]:
    from vqa_pipe.pipeline.regressors import list_regressors

    return list_regressors()


def _parse_params(ctx, param, values) -> dict:
    from vqa_pipe.pipeline.regressors import RegressorError, parse_param

    out = {}
    for text in values or ():
        try:
            key, value = parse_param(text)
        except RegressorError as err:
            raise click.BadParameter(str(err)) from None
        out[key] = value
    return out


def params_from_file(spec: str) -> dict:
    """The mapping at ``KEY.PATH`` of a YAML file (``FILE[:KEY.PATH]``); empty or null -> {}."""
    import yaml

    path, _, key = spec.partition(":")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as err:
        raise click.BadParameter(f"cannot read {path}: {err.strerror}",
                                 param_hint="--param-file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise click.BadParameter(f"{path} is not plain YAML ({first})",
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
    for text in values or ():
        if "=" not in text:
            raise click.BadParameter(f"expected NAME=FILE, got {text!r}")
        name, path = text.split("=", 1)
        out[name.strip()] = Path(path)
    return out


def _parse_branches(ctx, param, value):
    if not value:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))


def _parse_tests(ctx, param, values) -> list:
    """``NAME`` (manifests/NAME.csv, features/NAME.zarr) or ``NAME=STORE,MANIFEST``."""
    from vqa_pipe.pipeline.layout import resolve_dataset

    refs = []
    for text in values or ():
        name, _, paths = str(text).partition("=")
        store = manifest = None
        if paths:
            store, _, manifest = paths.partition(",")
            if not store or not manifest:
                raise click.BadParameter(f"expected NAME or NAME=STORE,MANIFEST, got {text!r}")
        refs.append(resolve_dataset(name.strip(), manifest, store))
    return refs


@click.command("train")
@dataset_options()
@click.option("--regressor", type=LazyChoice(_regressor_names), default="svr", show_default=True,
              help="Regressor from the registry.")
@click.option("--param", multiple=True, callback=_parse_params, metavar="KEY=VALUE",
              help="Regressor parameter (repeatable; VALUE read as JSON if it parses).")
@click.option("--param-file", metavar="FILE[:KEY.PATH]",
              help="Regressor parameters from a YAML mapping, e.g. params.yaml:regressor.svr "
                   "(what dvc.yaml uses); --param entries win over it.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="random", show_default=True,
              help="random splits, KoNViD permutations, official lists, or cross-dataset only.")
@click.option("--splits", default=10, show_default=True, type=click.IntRange(1),
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
@click.option("--official-list", multiple=True, callback=_parse_lists, metavar="NAME=FILE",
              help="For protocol official: train=... and test sets, e.g. "
                   "test=labels_test.txt test-1080p=labels_1080p.txt.")
@click.option("--allow-missing", is_flag=True,
              help="Leave out split-file videos that have no features (they are counted).")
@click.option("--test", multiple=True, callback=_parse_tests, metavar="NAME[=STORE,MANIFEST]",
              help="Another dataset to test every model on (repeatable).")
@click.option("--branches", callback=_parse_branches,
              help="Store branches pooled into flat features, comma-separated (default: all in "
                   "the store), e.g. semantic,videval for the 'CNN+VIDEVAL' rows.")
@click.option("--frames", default=16, show_default=True, type=click.IntRange(1),
              help="T: frames per video after resampling (mlp, gru, fused).")
@click.option("--clip-frames", default=32, show_default=True, type=click.IntRange(1),
              help="T of the CLIPVQA head's frame roles: frames picked per video by TSN "
                   "(clipvqa).")
@click.option("--nan-policy", type=click.Choice(NAN_POLICIES), default="drop",
              show_default=True,
              help="Videos with NaN features: drop (counted), error, impute zero, or impute the "
                   "training mean.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="Splits trained in parallel worker processes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default runs/<dataset>/<regressor>).")
@click.option("--save-models/--no-save-models", default=True, show_default=True,
              help="Save each split's model in the run folder.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
def train(dataset, manifest, store, regressor, param, param_file, protocol, splits, test_ratio,
          val_ratio, seed, konvid_info, split_start, official_list, allow_missing, test, branches,
          frames, clip_frames, nan_policy, jobs, out, save_models, progress):
    """Stage two: train a regressor on cached features and evaluate it under the protocol.

    Writes the run folder: config.json, splits.json, metrics.json (median and spread over
    splits), predictions.csv, summary.txt, scatter plots and models/<split>/.
    """
    from vqa_pipe.pipeline.feature_table import TableSpec
    from vqa_pipe.pipeline.layout import Layout, resolve_dataset
    from vqa_pipe.stages.train import DatasetRef, TrainOptions, run_train

    paths = resolve_dataset(dataset, manifest, store)
    out = out or Layout().run(paths.name, regressor)
    params = {**(params_from_file(param_file) if param_file else {}), **param}
    opts = TrainOptions(
        regressor=regressor, params=params, protocol=protocol, n_splits=splits,
        test_ratio=test_ratio, val_ratio=val_ratio, seed=seed, konvid_info=konvid_info,
        split_start=split_start, official_lists=official_list, allow_missing=allow_missing,
        spec=TableSpec(flat_branches=branches, n_frames=frames, nan_policy=nan_policy,
                       clip_frames=clip_frames),
        jobs=jobs, save_models=save_models,
    )
    refs = [DatasetRef(store=t.store, manifest=t.manifest, name=t.name) for t in test]
    result = run_train(DatasetRef(store=paths.store, manifest=paths.manifest, name=paths.name),
                       out, opts, refs, progress=progress)
    click.echo(f"{regressor} on {paths.name}, protocol {protocol}, {len(result.fit_info)} "
               f"splits, {result.seconds:.1f} s")
    click.echo(result.summary_text())
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"run folder: {out}")


@click.command("evaluate")
@click.argument("run_dir", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@dataset_options()
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Score a predictions.csv instead (columns video_id, mos, prediction[, split, "
                   "test_set]).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default cross/<trained on>/<regressor>/<dataset>).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
def evaluate(run_dir, dataset, manifest, store, predictions, out, progress):
    """Evaluate the models of a training RUN_DIR on another dataset (cross-dataset), or
    score an existing --predictions file. Writes metrics.json, predictions.csv, summary.txt
    and scatter.png."""
    from vqa_pipe.pipeline.layout import resolve_dataset
    from vqa_pipe.stages.evaluate import default_out, evaluate_predictions, run_evaluate

    if predictions is not None:
        if run_dir or store or dataset or manifest:
            raise click.UsageError("--predictions is used alone (no RUN_DIR or dataset)")
        result = evaluate_predictions(predictions, out)
    else:
        if run_dir is None:
            raise click.UsageError("give RUN_DIR and --dataset (or --predictions CSV)")
        paths = resolve_dataset(dataset, manifest, store)
        out = out or default_out(run_dir, paths.name)
        result = run_evaluate(run_dir, paths.store, paths.manifest, out, dataset=paths.name,
                              progress=progress)
    click.echo(result.summary_text())
    for note in result.notes:
        click.echo(f"note: {note}")
    if out:
        click.echo(f"written to {out}")


COMMANDS = [train, evaluate]
