"""``vqa-pipe train`` and ``vqa-pipe evaluate``: stage two on cached features."""

from __future__ import annotations

from pathlib import Path

import click

from vqa_pipe.cli.options import dataset_options, options_from
from vqa_pipe.stages.train import TrainOptions


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
@options_from(TrainOptions)
@click.option("--param", multiple=True, callback=_parse_params, metavar="KEY=VALUE",
              help="Regressor parameter (repeatable; VALUE read as JSON if it parses). "
                   "`vqa-pipe regressors NAME` lists them.")
@click.option("--param-file", metavar="FILE[:KEY.PATH]",
              help="Regressor parameters from a YAML mapping, e.g. params.yaml:regressor.svr "
                   "(what dvc.yaml uses); --param entries win over it.")
@click.option("--official-list", multiple=True, callback=_parse_lists, metavar="NAME=FILE",
              help="For protocol official: train=... and test sets, e.g. "
                   "test=labels_test.txt test-1080p=labels_1080p.txt.")
@click.option("--test", multiple=True, callback=_parse_tests, metavar="NAME[=STORE,MANIFEST]",
              help="Another dataset to test every model on (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default runs/<dataset>/<regressor>).")
@click.option("--final/--no-final", default=False, show_default=True,
              help="Also fit one model on all labelled videos (validation carved at random for "
                   "the choices that need one) into RUN_DIR/final, for `vqa-pipe export`.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
def train(dataset, manifest, store, param, param_file, official_list, test, out, final,
          progress, **values):
    """Stage two: train a regressor on cached features and evaluate it under the protocol.

    Writes the run folder: config.json, splits.json, metrics.json (median and spread over
    splits), predictions.csv, summary.txt, scatter plots and models/<split>/.
    """
    from vqa_pipe.pipeline.layout import Layout, resolve_dataset
    from vqa_pipe.stages.train import DatasetRef, run_train

    paths = resolve_dataset(dataset, manifest, store)
    params = {**(params_from_file(param_file) if param_file else {}), **param}
    opts = TrainOptions(**values, params=params, official_lists=official_list)
    out = out or Layout().run(paths.name, opts.regressor)
    refs = [DatasetRef(store=t.store, manifest=t.manifest, name=t.name) for t in test]
    result = run_train(DatasetRef(store=paths.store, manifest=paths.manifest, name=paths.name),
                       out, opts, refs, progress=progress)
    click.echo(f"{opts.regressor} on {paths.name}, protocol {opts.protocol}, "
               f"{len(result.fit_info)} splits, {result.seconds:.1f} s")
    click.echo(result.summary_text())
    for note in result.notes:
        click.echo(f"note: {note}")
    if final:
        from vqa_pipe.stages.export import fit_final

        click.echo(f"final model: {fit_final(out, log=lambda m: click.echo(m, err=True))}")
    click.echo(f"run folder: {out}")


@click.command("regressors")
@click.argument("name", required=False)
def regressors(name):
    """List the regressors, or one regressor's parameters (name, valid values, default)."""
    from vqa_pipe.pipeline.regressors import describe_params, get_regressor, list_regressors

    if name:
        cls = get_regressor(name)
        click.echo(f"{name}: {_summary(cls)}")
        click.echo(f"reads: {', '.join(cls.roles)}")
        for line in describe_params(name):
            click.echo(f"  {line}")
        return
    for regressor in list_regressors():
        cls = get_regressor(regressor)
        click.echo(f"{regressor:10s} {_summary(cls)}")


def _summary(cls: type) -> str:
    """The first line of a class's docstring ('' without one)."""
    lines = (cls.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


@click.command("evaluate")
@click.argument("run_dir", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@dataset_options()
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Score a predictions.csv instead (columns video_id, mos, prediction[, split, "
                   "test_set]).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default cross/<trained on>/<regressor>/<dataset>).")
@click.option("--allow-config-mismatch", is_flag=True,
              help="Evaluate on features extracted with another configuration than the run's "
                   "(every output then says so).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
def evaluate(run_dir, dataset, manifest, store, predictions, out, allow_config_mismatch,
             progress):
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
                              progress=progress, allow_config_mismatch=allow_config_mismatch)
    click.echo(result.summary_text())
    for note in result.notes:
        click.echo(f"note: {note}")
    if out:
        click.echo(f"written to {out}")


COMMANDS = [train, evaluate, regressors]
