"""``vqa-pipe report``: the cross-dataset table from stage two's run folders."""

from __future__ import annotations

from pathlib import Path

import click

from vqa_pipe.cli.options import PARSED_TEXT, read_yaml


def _names(ctx, param, value) -> list[str]:
    if isinstance(value, (list, tuple)):  # from a params file
        return [str(v) for v in value]
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.command("report")
@click.option(
    "--datasets", type=PARSED_TEXT, callback=_names, help="Comma-separated dataset names."
)
@click.option(
    "--regressors", type=PARSED_TEXT, callback=_names, help="Comma-separated regressors."
)
@click.option(
    "--lists-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Take missing --datasets/--regressors from the top-level 'datasets' and "
    "'regressors' lists of this YAML file (dvc's params.yaml).",
)
@click.option(
    "--evaluate/--no-evaluate",
    default=True,
    show_default=True,
    help="Test every run on the other datasets first (into cross/), or only tabulate.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default reports/).",
)
def report(datasets, regressors, lists_from, evaluate, out):
    """Evaluate every run on the other datasets; write the train × test table and per-split CSV.

    Runs are read from runs/<dataset>/<regressor>, stores from features/<dataset>.zarr and
    manifests from manifests/<dataset>.csv, as `train`, `extract` and `manifest build` write
    them.
    """
    from vqa_pipe.stages.report import run_report

    if lists_from:
        top = read_yaml(lists_from) or {}
        if not isinstance(top, dict):
            raise click.UsageError(f"{lists_from}: expected a mapping with 'datasets' and "
                                   "'regressors' lists")
        datasets = datasets or _names(None, None, top.get("datasets") or [])
        regressors = regressors or _names(None, None, top.get("regressors") or [])
    if not datasets or not regressors:
        raise click.UsageError("give --datasets and --regressors (or --lists-from params.yaml)")
    md = run_report(datasets, regressors, out=out, evaluate=evaluate, log=click.echo)
    click.echo(md.read_text())


COMMANDS = [report]
