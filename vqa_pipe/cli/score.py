"""``vqa-pipe export`` (a training run -> a model bundle) and ``vqa-pipe score`` (new videos)."""

from __future__ import annotations

from pathlib import Path

import click

from vqa_pipe.cli.options import options_from
from vqa_pipe.stages.extract import ExtractOptions
from vqa_pipe.stages.score import ScoreOptions

# extract's run options that score does not offer: the branches come from the model, and
# the cache store is score's own (always every input video, replaced on a new model)
_NOT_FOR_SCORE = ("branches", "redo", "on_config_change", "limit")


@click.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Bundle folder (default models/<dataset>/<regressor>).")
@click.option("--members", default="auto", show_default=True,
              help="auto (the final model if the run has one, else every split model as an "
                   "ensemble), final, ensemble, or one split's name.")
@click.option("--clip-pretrained", type=click.Path(exists=True, dir_okay=False),
              help="CLIP checkpoint file to record in the bundle for scoring (its sha256 must "
                   "be the training store's).")
@click.option("--swin-weights", type=click.Path(exists=True, dir_okay=False),
              help="Swin checkpoint file to record in the bundle (sha256 checked likewise).")
def export(run_dir, out, members, clip_pretrained, swin_weights):
    """Make a self-contained model bundle of a training RUN_DIR, to score new videos with
    `vqa-pipe score MODEL_DIR ...`: the model(s), the exact feature configuration, the
    training statistics and a model card (README.md)."""
    from vqa_pipe.stages.export import describe_bundle, run_export

    bundle = run_export(run_dir, out, members=members, clip_pretrained=clip_pretrained,
                        swin_weights=swin_weights, log=lambda m: click.echo(m, err=True))
    click.echo(describe_bundle(bundle.path))
    click.echo(f"next: vqa-pipe score {bundle.path} VIDEO_OR_FOLDER ...")


@click.command("score")
@click.argument("args", nargs=-1, required=True, metavar="[MODEL_DIR] INPUT...")
@options_from(ScoreOptions, ExtractOptions, exclude=_NOT_FOR_SCORE)
def score(args, **values):
    """Score videos that have no MOS: with a model bundle (vqa-pipe export), or with
    --zero-shot (CLIP-IQA, no training). Each INPUT is a video file, a folder (searched
    recursively) or a manifest CSV.

    Writes OUT/scores.csv (score on the training scale and on 0-100, the descriptions that
    explain it, failures with their reason), OUT/scores.json with --json, and one PNG per
    video plus index.html with --report DIR. Features are cached in a store, so a rerun
    resumes and skips done videos. Exit code: non-zero only when no video could be scored, or
    with --strict when any failed.
    """
    from vqa_pipe.stages.score import run_score

    run, rest = ExtractOptions.split(values)
    options = ScoreOptions(**rest)
    if options.zero_shot:
        model_dir, inputs = None, list(args)
    else:
        model_dir, inputs = args[0], list(args[1:])
        if not inputs:
            raise click.UsageError(
                "give a model bundle and at least one video, folder or manifest to score "
                "(or --zero-shot INPUT... to score without a model)"
            )
    summary = run_score(model_dir, inputs, options, run,
                        log=lambda m: click.echo(m, err=True))
    for line in summary.lines():
        click.echo(line)
    if not summary.ok or (run.strict and summary.failed):
        raise SystemExit(1)


COMMANDS = [export, score]
