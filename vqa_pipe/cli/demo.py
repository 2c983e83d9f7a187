"""``vqa-pipe demo``: the built-in dataset, extracted end to end with no downloads."""

from __future__ import annotations

import click

from vqa_pipe.cli.options import options_from
from vqa_pipe.pipeline.branches import branch_option_classes
from vqa_pipe.stages.extract import ExtractOptions


@click.command("demo")
@click.option(
    "--name",
    default="demo",
    show_default=True,
    help="Dataset name: clips in demo/<name>/data, manifests/<name>.csv, features/<name>.zarr.",
)
@click.option(
    "--scenes",
    default=3,
    show_default=True,
    type=click.IntRange(1, 6),
    help="Scenes (16 clips each).",
)
@click.option(
    "--first-scene",
    default=0,
    show_default=True,
    type=click.IntRange(0, 5),
    help="First scene (0-5) of the demo's fixed scene list; another value, other scenes.",
)
@click.option(
    "--data-only",
    is_flag=True,
    help="Only render the clips and their labels (build the manifest with `vqa-pipe manifest "
    "build demo --root demo/<name>/data`).",
)
@options_from(
    ExtractOptions,
    *branch_option_classes(),
    exclude=("workers", "scheduler", "limit"),
    defaults={"clip_model": "vqa-tiny-clip"},
)
def demo(name, scenes, first_scene, data_only, **values):
    """Make the demo clips (real distortions, documented MOS rule) and extract their features.

    The default tiny CLIP keeps the demo under a minute on a CPU; it has no trained weights,
    so pass --random-weights (every output then says the numbers are meaningless), or a real
    model with --clip-model/--clip-pretrained.
    """
    from vqa_pipe.stages.demo import make_demo_data, run_demo
    from vqa_pipe.stages.inspect import describe_store

    if data_only:
        data = make_demo_data(name, scenes=scenes, first_scene=first_scene)
        click.echo(f"demo clips and labels of '{name}' in {data}")
        return
    options, branch_values = ExtractOptions.split(values)
    manifest, store, summary = run_demo(
        name,
        scenes=scenes,
        first_scene=first_scene,
        options=options,
        branch_options=branch_values,
        log=lambda m: click.echo(m, err=True),
    )
    for line in summary.lines():
        click.echo(line)
    click.echo(describe_store(store, show_failed=False))
    click.echo(f"manifest: {manifest}")
    click.echo(f"next: vqa-pipe train --dataset {name}")
    if not summary.ok:
        raise SystemExit(1)


COMMANDS = [demo]
