"""``vqa-pipe report``: the cross-dataset table from stage two's run folders."""

from __future__ import annotations

from pathlib import Path

import click


def _names(ctx, param, value) -> list[str]:
    if isinstance(value, (list, tuple)):  # from a params file
        return [str(v) for v in value]
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.command("report")
@click.option("--datasets", callback=_names, help="Comma-separated dataset names.")
@click.option("--regressors", callback=_names, help="Comma-separated regressors.")
@click.option(
    "--lists-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Take missing --datasets/--regressors from the top-level 'datasets' and "
    "'regressors' lists of this YAML file (dvc's params.yaml).",
)
@click.option(
    "--runs",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Training runs, as <runs>/<dataset>/<regressor>.",
)
@click.option(
    "--features",
    default="features",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature stores, as <features>/<dataset>.zarr.",
)
@click.option(
    "--manifests",
    default="manifests",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Manifests, as <manifests>/<dataset>.csv.",
)
@click.option(
    "--cross",
    default="cross",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Cross-dataset evaluations, as <cross>/<train>/<regressor>/<test>.",
)
@click.option(
    "--no-evaluate",
    is_flag=True,
    help="Only tabulate: the cross-dataset evaluations exist already.",
)
@click.option(
    "--out",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder.",
)
def report(datasets, regressors, lists_from, runs, features, manifests, cross, no_evaluate, out):
    """Evaluate every run on the other datasets; write the train × test table and per-split CSV."""
    from vqa_pipe.cli.train import _errors
    from vqa_pipe.stages.report import ReportError, run_report

    if lists_from:
        import yaml

        top = yaml.safe_load(lists_from.read_text()) or {}
        datasets = datasets or _names(None, None, top.get("datasets") or [])
        regressors = regressors or _names(None, None, top.get("regressors") or [])
    if not datasets or not regressors:
        raise click.UsageError("give --datasets and --regressors (or --lists-from params.yaml)")
    try:
        md = run_report(
            runs,
            datasets,
            regressors,
            out,
            cross=cross,
            features=features,
            manifests=manifests,
            evaluate=not no_evaluate,
            log=click.echo,
        )
    except (ReportError, *_errors()) as err:
        raise click.ClickException(str(err)) from None
    click.echo(md.read_text())


COMMANDS = [report]
