"""``vqa-pipe report``: the cross-dataset table from stage two's run folders."""

from __future__ import annotations

from pathlib import Path

import click


def _names(ctx, param, value) -> list[str]:
    if isinstance(value, (list, tuple)):  # from a params file
        return [str(v) for v in value]
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.command("report")
@click.option(
    "--runs",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of run folders <train>/<regressor>[/eval-<test>].",
)
@click.option("--datasets", required=True, callback=_names, help="Comma-separated dataset names.")
@click.option("--regressors", required=True, callback=_names, help="Comma-separated regressors.")
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature stores behind the runs (repeatable): random weights are flagged.",
)
@click.option(
    "--out",
    default="reports",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder.",
)
def report(runs, datasets, regressors, stores, out):
    """Write the cross-dataset table (train rows × test columns) and per-split results."""
    from vqa_pipe.pipeline.store import StoreError
    from vqa_pipe.stages.report import ReportError, run_report

    try:
        md = run_report(runs, datasets, regressors, out, stores)
    except (ReportError, StoreError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(md.read_text())


COMMANDS = [report]
