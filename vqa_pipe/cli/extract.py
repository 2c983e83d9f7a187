"""``vqa-pipe extract``, ``inspect``, ``verify``, ``rescore`` and ``weights``.

``extract``'s options are made from the declarations: the run options of
:class:`~vqa_pipe.stages.extract.ExtractOptions` and every registered branch's options
(``vqa_pipe.pipeline.branches``).
"""

from __future__ import annotations

from pathlib import Path

import click

from vqa_pipe.cli.options import LazyChoice, dataset_options, options_from
from vqa_pipe.pipeline.branches import branch_option_classes
from vqa_pipe.pipeline.prompts import SOFTMAX_MODES
from vqa_pipe.stages.extract import ExtractOptions


def _presets() -> list[str]:
    from vqa_pipe.pipeline.presets import list_presets

    return list_presets()


def apply_preset(name: str | None, values: dict) -> dict:
    """``values`` with a preset's settings where the user gave no value (command line or
    params file): explicit options win over the preset."""
    if not name:
        return values
    from vqa_pipe.pipeline.presets import load_preset

    ctx = click.get_current_context()
    out = dict(values)
    for key, value in load_preset(name, valid_keys=values).items():
        key = key.replace("-", "_")
        if ctx.get_parameter_source(key) is click.core.ParameterSource.DEFAULT:
            out[key] = value
    return out


@click.command("extract")
@dataset_options(store_help="Feature store to create or resume (default: features/<dataset>.zarr).")
@click.option(
    "--preset",
    type=LazyChoice(_presets),
    help="Stage-one settings of a paper (pipeline/data/presets: clif-vqa, clipvqa); options "
    "given explicitly win.",
)
@options_from(ExtractOptions, *branch_option_classes())
def extract(dataset, manifest, store, preset, **values):
    """Stage one: extract features of every video in a manifest into a Zarr feature store."""
    from vqa_pipe.pipeline.layout import resolve_dataset
    from vqa_pipe.stages.extract import extract as run

    paths = resolve_dataset(dataset, manifest, store)
    options, branch_values = ExtractOptions.split(apply_preset(preset, values))
    summary = run(paths.manifest, paths.store, options, branch_values, log=_stderr)
    for line in summary.lines():
        click.echo(line)
    if not summary.ok or (options.strict and (summary.failed or summary.failed_before)):
        raise SystemExit(1)


def _stderr(message: str) -> None:
    click.echo(message, err=True)


def resolve_store(text: str) -> Path:
    """A store folder, or a dataset name (``features/<name>.zarr``)."""
    from vqa_pipe.pipeline.layout import Layout, LayoutError

    path = Path(text)
    if (path / "zarr.json").is_file():
        return path
    try:
        by_name = Layout().store(text)
    except LayoutError:
        by_name = None
    if by_name is not None and by_name.exists():
        return by_name
    if path.exists():
        return path  # not a store: opening it says so
    raise click.BadParameter(
        f"{text} is neither a feature store nor a dataset with one"
        + (f" (looked at {by_name})" if by_name is not None else "")
    )


@click.command("inspect")
@click.argument("store", metavar="STORE|MODEL_DIR")
@click.option(
    "--failed/--no-failed", default=True, show_default=True, help="List failed videos with reasons."
)
def inspect(store: str, failed: bool):
    """Print a feature store's configuration, counts and array shapes, or a model bundle's
    model, features, training data and metrics.

    STORE is a store folder or a dataset name (features/<name>.zarr); MODEL_DIR is a bundle
    folder made by `vqa-pipe export`.
    """
    from vqa_pipe.pipeline.bundle import is_bundle

    if is_bundle(store):
        from vqa_pipe.stages.export import describe_bundle

        click.echo(describe_bundle(store))
        return
    from vqa_pipe.stages.inspect import describe_store

    click.echo(describe_store(resolve_store(store), show_failed=failed))


@click.command("verify")
@click.argument("store")
@click.option(
    "--mark",
    is_flag=True,
    help="Record every damaged video as failed, so `extract --retry-failed` redoes it.",
)
def verify(store: str, mark: bool):
    """Read a whole feature store, check every invariant, and name the damaged videos.

    STORE is a store folder or a dataset name. Exit code: 0 clean, 3 damage found (marked with
    --mark), 4 root metadata unreadable.
    """
    from vqa_pipe.stages.verify import verify_store

    report = verify_store(resolve_store(store), mark=mark)
    click.echo(report.summary())
    if report.exit_code:
        raise SystemExit(report.exit_code)


@click.command("rescore")
@click.argument("source")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New store for the re-scored features (the source is not written).",
)
@click.option(
    "--prompts", default="default", show_default=True, help="'default' or a prompt JSON file."
)
@click.option(
    "--softmax", type=click.Choice(SOFTMAX_MODES), help="Default: the source store's mode."
)
@click.option("--clip-pretrained", help="The CLIP checkpoint the source was made with.")
@click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 … (text tower)."
)
def rescore(source, out, prompts, softmax, clip_pretrained, device):
    """Score cached window embeddings against new prompts, without running CLIP on videos.

    SOURCE is a store folder or a dataset name (features/<name>.zarr).
    """
    from vqa_pipe.pipeline.device import resolve_device
    from vqa_pipe.pipeline.weights import RANDOM_WEIGHTS_BANNER
    from vqa_pipe.stages.rescore import run_rescore

    summary = run_rescore(
        resolve_store(source),
        out,
        prompts=prompts,
        softmax=softmax,
        clip_pretrained=clip_pretrained,
        device=resolve_device(device),
    )
    if summary.random_weights:
        click.echo(RANDOM_WEIGHTS_BANNER)
    click.echo(
        f"re-scored {summary.videos} videos into {summary.store}: {summary.parts_written} "
        f"parts written, {summary.parts_skipped} skipped, {summary.seconds:.1f} s"
    )


@click.group("weights")
def weights():
    """Model weights: where they are looked for, and how to fetch them on an online machine."""


@weights.command("list")
def weights_list():
    """List the CLIP model names and Swin backbones this installation knows."""
    from vqa_pipe.pipeline.clip_model import available_models
    from vqa_pipe.pipeline.swin_backbone import list_backbones

    click.echo("CLIP models (--clip-model): " + ", ".join(available_models()))
    click.echo("Swin backbones (--spatial-backbone): " + ", ".join(list_backbones()))


@weights.command("download")
@click.argument("model")
@click.argument("tag")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Cache folder (default: Hugging Face cache).",
)
def weights_download(model: str, tag: str, cache_dir: str | None):
    """Download an open_clip checkpoint (needs internet) into the local cache."""
    from vqa_pipe.pipeline.clip_model import download_weights
    from vqa_pipe.pipeline.errors import VqaPipeError

    try:
        path = download_weights(model, tag, cache_dir)
    except VqaPipeError:
        raise
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise click.ClickException(f"download of {model} / {tag} failed: {err}") from None
    click.echo(f"saved {model} / {tag} to {path}")
    click.echo(f"use it with: vqa-pipe extract --clip-model {model} --clip-pretrained {tag} …")


COMMANDS = [extract, inspect, verify, rescore, weights]
