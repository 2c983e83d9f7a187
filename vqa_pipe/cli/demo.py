"""``vqa-pipe demo``: the built-in dataset, extracted end to end with no downloads."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for clips and features.",
)
@click.option(
    "--clip-model",
    default="vqa-tiny-clip",
    show_default=True,
    help="open_clip model (the default tiny model keeps the demo under a minute on a CPU).",
)
@click.option("--clip-pretrained", help="Checkpoint file or open_clip tag in the local cache.")
@click.option(
    "--random-weights", is_flag=True, help="Use untrained weights (no checkpoint needed)."
)
@click.option(
    "--scenes",
    default=3,
    show_default=True,
    type=click.IntRange(1, 6),
    help="Scenes (16 clips each).",
)
@click.option("--branches", default="semantic", show_default=True, help="semantic and/or spatial.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--data-only", is_flag=True, help="Only make the clips and their manifest.")
@click.option(
    "--first-scene",
    default=0,
    show_default=True,
    type=click.IntRange(0, 5),
    help="First scene (0-5) of the demo's fixed scene list; another value, other scenes.",
)
def demo(
    out_dir,
    clip_model,
    clip_pretrained,
    random_weights,
    scenes,
    branches,
    no_progress,
    data_only,
    first_scene,
):
    """Make the demo clips (real distortions, documented MOS rule) and extract their features."""
    from vqa_pipe.cli.extract import _parse_branches
    from vqa_pipe.stages.demo import run_demo
    from vqa_pipe.stages.inspect import describe_store

    if data_only:
        from vqa_pipe.pipeline.demo_clips import make_demo_dataset

        try:
            manifest = make_demo_dataset(out_dir / "data", n_scenes=scenes, first_scene=first_scene)
        except (OSError, ValueError) as err:
            raise click.ClickException(str(err)) from None
        click.echo(f"demo clips and labels in {manifest.parent}; manifest {manifest}")
        return
    names = _parse_branches(None, None, branches)
    try:
        manifest, summary = run_demo(
            out_dir,
            branches=names,
            clip_model=clip_model,
            clip_pretrained=clip_pretrained,
            random_weights=random_weights,
            n_scenes=scenes,
            progress=not no_progress,
            log=click.echo,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    for line in summary.lines():
        click.echo(line)
    click.echo(describe_store(summary.store, show_failed=False))
    click.echo(f"manifest: {manifest}")
    if not summary.ok:
        raise SystemExit(1)


COMMANDS = [demo]
