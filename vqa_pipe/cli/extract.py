"""``vqa-pipe extract``, ``vqa-pipe inspect`` and ``vqa-pipe weights``."""

from __future__ import annotations

import re
from pathlib import Path

import click

BRANCHES = ("semantic", "spatial")
SOFTMAX = ("all", "per_set", "pairs")


def _parse_grid(ctx, param, value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value or "")
    if not match:
        raise click.BadParameter(f"expected ROWSxCOLS such as 3x3, got {value!r}")
    rows, cols = int(match.group(1)), int(match.group(2))
    if not (1 <= rows <= 9 and 1 <= cols <= 9):
        raise click.BadParameter(f"rows and columns must be 1..9, got {rows}x{cols}")
    return rows, cols


def _parse_branches(ctx, param, value: str) -> list[str]:
    names = [v.strip() for v in (value or "").split(",") if v.strip()]
    bad = [n for n in names if n not in BRANCHES]
    if bad or not names:
        raise click.BadParameter(
            f"choose from {', '.join(BRANCHES)} (comma-separated), got {value!r}"
        )
    return list(dict.fromkeys(names))


def _parse_fps(ctx, param, value: str) -> float | None:
    if str(value).lower() == "all":
        return None
    try:
        fps = float(value)
    except ValueError:
        raise click.BadParameter(f"expected frames per second or 'all', got {value!r}") from None
    if fps <= 0:
        raise click.BadParameter("must be positive")
    return fps


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise click.UsageError(f"--device {name} asked for, but torch sees no CUDA device")
    return name


def default_store_path(
    dataset: str,
    clip_model: str,
    grid: tuple[int, int],
    softmax: str,
    prompts: str,
    random_weights: bool,
) -> Path:
    """``features/<dataset>/<model>-<grid>-<softmax>-<prompts>[-random].zarr``."""
    prompt_name = "default" if prompts == "default" else Path(prompts).stem
    slug = f"{clip_model}-{grid[0]}x{grid[1]}-{softmax}-{prompt_name}" + (
        "-random" if random_weights else ""
    )
    return Path("features") / dataset / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', slug)}.zarr"


@click.command("extract")
@click.option(
    "--dataset",
    help="Dataset name: reads manifests/<dataset>.csv, writes features/<dataset>/….zarr.",
)
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest CSV (instead of --dataset).",
)
@click.option(
    "--out",
    "store_path",
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature store to create or resume (default from --dataset and the configuration).",
)
@click.option(
    "--branches",
    default="semantic",
    show_default=True,
    callback=_parse_branches,
    help="Comma-separated: semantic (CLIP windows), spatial (Swin fragments).",
)
@click.option("--clip-model", default="ViT-B-32", show_default=True, help="open_clip model name.")
@click.option(
    "--clip-pretrained", help="Checkpoint file or open_clip tag found in the local cache."
)
@click.option(
    "--random-weights",
    is_flag=True,
    help="Use untrained weights (smoke tests only; every output says so).",
)
@click.option(
    "--grid",
    default="3x3",
    show_default=True,
    callback=_parse_grid,
    help="Windows per frame, ROWSxCOLS.",
)
@click.option(
    "--window-fit",
    type=click.Choice(["native", "cover"]),
    default="native",
    show_default=True,
    help="native: windows at native resolution; cover: shrink big frames until covered.",
)
@click.option(
    "--softmax",
    type=click.Choice(SOFTMAX),
    default="per_set",
    show_default=True,
    help="Normalise over all prompts, per prompt set, or per antonym pair.",
)
@click.option(
    "--prompts", default="default", show_default=True, help="'default' or a prompt JSON file."
)
@click.option(
    "--fps",
    default="2",
    show_default=True,
    callback=_parse_fps,
    help="Frames sampled per second, or 'all'.",
)
@click.option(
    "--max-frames",
    default=64,
    show_default=True,
    type=int,
    help="Cap on sampled frames per video (0: none).",
)
@click.option(
    "--batch-windows", default=288, show_default=True, type=int, help="Windows per CLIP batch."
)
@click.option(
    "--swin-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Video Swin Tiny checkpoint (spatial branch).",
)
@click.option(
    "--spatial-clips", default=4, show_default=True, type=int, help="Fragment clips per video."
)
@click.option(
    "--spatial-output",
    type=click.Choice(["map", "pooled"]),
    default="map",
    show_default=True,
    help="Store the Swin feature map per clip (plus pooled) or only the pooled vector.",
)
@click.option(
    "--spatial-backbone",
    type=click.Choice(["auto", "swin3d_t", "swin3d_t_grpb"]),
    default="auto",
    show_default=True,
    help="auto: chosen from the checkpoint's keys (FAST-VQA/DOVER -> swin3d_t_grpb).",
)
@click.option(
    "--spatial-samplings",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Differently seeded fragment samplings per clip (training augmentation).",
)
@click.option(
    "--spatial-seed", default=0, show_default=True, type=int, help="Fragment sampling seed."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@click.option("--part-size", default=32, show_default=True, type=int, help="Videos per store part.")
@click.option(
    "--timeout",
    "timeout_s",
    default=120.0,
    show_default=True,
    type=float,
    help="Seconds without a decoded frame before a video fails.",
)
@click.option("--retry-failed", is_flag=True, help="Redo videos recorded as failed.")
@click.option(
    "--on-config-change",
    type=click.Choice(["error", "replace"]),
    default="error",
    show_default=True,
    help="When --out holds a store made with other settings: refuse, or delete it and start over.",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(0, 256),
    help="Extract parts in parallel on a local dask cluster of N worker processes.",
)
@click.option("--scheduler", help="Address of a running dask scheduler (tcp://host:8786).")
@click.option("--limit", type=int, help="Only the first N videos of the manifest.")
@click.option(
    "--strict", is_flag=True, help="Exit non-zero when any video failed (in this run or before)."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def extract(
    dataset,
    manifest_path,
    store_path,
    branches,
    clip_model,
    clip_pretrained,
    random_weights,
    grid,
    window_fit,
    softmax,
    prompts,
    fps,
    max_frames,
    batch_windows,
    swin_weights,
    spatial_clips,
    spatial_output,
    spatial_backbone,
    spatial_samplings,
    spatial_seed,
    device,
    part_size,
    timeout_s,
    retry_failed,
    on_config_change,
    workers,
    scheduler,
    limit,
    strict,
    no_progress,
):
    """Stage one: extract features of every video in a manifest into a Zarr feature store."""
    from vqa_pipe.stages.extract import build_branches, run_extract

    if bool(dataset) == bool(manifest_path):
        raise click.UsageError("give exactly one of --dataset NAME or --manifest CSV")
    if dataset:
        manifest_path = Path("manifests") / f"{dataset}.csv"
        if not manifest_path.is_file():
            raise click.UsageError(
                f"no manifest at {manifest_path}; build it first: "
                f"vqa-pipe manifest build {dataset} --root DIR --out {manifest_path}"
            )
    elif not manifest_path.is_file():
        raise click.UsageError(f"manifest not found: {manifest_path}")
    if store_path is None:
        name = dataset or manifest_path.stem
        store_path = default_store_path(name, clip_model, grid, softmax, prompts, random_weights)
    spec = dict(
        names=branches,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        random_weights=random_weights,
        grid=grid,
        window_fit=window_fit,
        softmax=softmax,
        prompts=prompts,
        fps=fps,
        max_frames=max_frames or None,
        batch_windows=batch_windows,
        swin_weights=str(swin_weights) if swin_weights else None,
        spatial_clips=spatial_clips,
        spatial_maps=spatial_output == "map",
        spatial_backbone=spatial_backbone,
        spatial_samplings=spatial_samplings,
        spatial_seed=spatial_seed,
        device=_device(device),
    )
    common = dict(
        part_size=part_size,
        timeout_s=timeout_s,
        retry_failed=retry_failed,
        limit=limit,
        progress=not no_progress,
    )
    try:
        if workers or scheduler:
            from vqa_pipe.stages.extract_dask import run_extract_dask

            summary = run_extract_dask(
                manifest_path,
                store_path,
                spec,
                workers=workers or 2,
                scheduler=scheduler,
                **common,
            )
        else:
            summary = run_extract(manifest_path, store_path, build_branches(**spec), **common)
    except (OSError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    for line in summary.lines():
        click.echo(line)
    if not summary.ok or (strict and (summary.failed or summary.failed_before)):
        raise SystemExit(1)


@click.command("inspect")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--failed/--no-failed", default=True, show_default=True, help="List failed videos with reasons."
)
def inspect(store: Path, failed: bool):
    """Print a feature store's configuration, counts and array shapes."""
    from vqa_pipe.stages.inspect import describe_store

    try:
        text = describe_store(store, show_failed=failed)
    except (OSError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(text)


@click.command("rescore")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New store for the re-scored features (the source is not written).",
)
@click.option(
    "--prompts", default="default", show_default=True, help="'default' or a prompt JSON file."
)
@click.option("--softmax", type=click.Choice(SOFTMAX), help="Default: the source's.")
@click.option("--clip-pretrained", help="The checkpoint the source was made with.")
@click.option("--device", default="auto", show_default=True)
def rescore(source, out, prompts, softmax, clip_pretrained, device):
    """Score cached window embeddings against new prompts, without running CLIP on videos."""
    from vqa_pipe.stages.extract import RANDOM_WEIGHTS_BANNER
    from vqa_pipe.stages.rescore import run_rescore

    try:
        summary = run_rescore(
            source,
            out,
            prompts=prompts,
            softmax=softmax,
            clip_pretrained=clip_pretrained,
            device=_device(device),
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    if summary.random_weights:
        click.echo(RANDOM_WEIGHTS_BANNER)
    click.echo(
        f"re-scored {summary.videos} videos into {summary.store}: {summary.parts_written} "
        f"parts written, {summary.parts_skipped} skipped, {summary.seconds:.1f} s"
    )


@click.group("weights")
def weights():
    """Model weights: where they are looked for, and how to fetch them on an online machine."""


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
    from vqa_pipe.pipeline.weights import WeightsError

    try:
        path = download_weights(model, tag, cache_dir)
    except WeightsError as err:
        raise click.ClickException(str(err)) from None
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise click.ClickException(f"download of {model} / {tag} failed: {err}") from None
    click.echo(f"saved {model} / {tag} to {path}")
    click.echo(f"use it with: vqa-pipe extract --clip-model {model} --clip-pretrained {tag} …")


COMMANDS = [extract, inspect, rescore, weights]
