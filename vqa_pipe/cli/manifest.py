"""``vqa-pipe manifest``: build and check manifest CSVs."""

from __future__ import annotations

from pathlib import Path

import click

from vqa_pipe.pipeline.datasets import list_datasets
from vqa_pipe.pipeline.manifest import MOS_SCALES


@click.group("manifest")
def manifest_group() -> None:
    """Build manifests (video id, path, MOS) from datasets' label files."""


@manifest_group.command("build")
@click.argument("dataset", type=click.Choice(list_datasets()))
@click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder; label paths are relative to it.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Label file (FAST-VQA labels.txt or the metadata CSV). Default: the dataset's "
    "usual file under --root (see `vqa-pipe manifest datasets`).",
)
@click.option(
    "--name",
    help="Dataset name the manifest is written for (default: DATASET); other commands then "
    "find it with --dataset NAME.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest CSV to write (default: manifests/<name>.csv).",
)
@click.option("--allow-missing", is_flag=True, help="Drop videos whose file is missing.")
@click.option("--drop-nan", is_flag=True, help="Drop rows whose MOS is NaN.")
@click.option(
    "--allow-outside-root",
    is_flag=True,
    help="Accept label paths that lead outside --root (.. or absolute paths elsewhere); by "
    "default they are refused naming the line. Symbolic links inside --root are always "
    "accepted.",
)
@click.option(
    "--no-check-files",
    is_flag=True,
    help="Do not look for the video files (build before the data is copied).",
)
@click.option(
    "--mos-scale",
    type=click.Choice(list(MOS_SCALES)),
    help="MOS scale of a `csv` dataset (inferred from the values by default).",
)
def build_command(
    dataset: str,
    root: Path,
    labels: Path | None,
    name: str | None,
    out: Path | None,
    allow_missing: bool,
    drop_nan: bool,
    allow_outside_root: bool,
    no_check_files: bool,
    mos_scale: str | None,
) -> None:
    """Write the manifest of DATASET (a recipe: `vqa-pipe manifest datasets`; videos under
    --root) to manifests/<name>.csv."""
    from vqa_pipe.pipeline.layout import Layout
    from vqa_pipe.stages.manifest import ManifestParams, run

    out = out or Layout().manifest(name or dataset)
    report = run(
        ManifestParams(
            dataset=dataset,
            root=root,
            out=out,
            labels=labels,
            allow_missing=allow_missing,
            drop_nan=drop_nan,
            allow_outside_root=allow_outside_root,
            check_files=not no_check_files,
            mos_scale=mos_scale,
        )
    )
    click.echo(report.summary())


@manifest_group.command("datasets")
def datasets_command() -> None:
    """List the datasets and the label files looked for under --root."""
    from vqa_pipe.pipeline.datasets import get_dataset

    for name in list_datasets():
        spec = get_dataset(name)
        click.echo(f"{name:16s} {spec.title}")
        click.echo(f"{'':16s} label files: {', '.join(spec.label_files)}")


@manifest_group.command("check")
@click.argument("manifest", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def check_command(manifest: Path) -> None:
    """Validate MANIFEST and report video files that are missing (exit 1 if any)."""
    from vqa_pipe.pipeline.manifest import find_missing, read_manifest

    rows = read_manifest(manifest)
    missing = find_missing(rows)
    scales = sorted({row.mos_scale for row in rows if row.mos_scale})
    click.echo(
        f"{manifest}: {len(rows)} videos, {sum(r.mos is not None for r in rows)} with MOS"
        + (f" (scale {', '.join(scales)})" if scales else "")
    )
    if missing:
        listed = "\n  ".join(f"{row.video_id}: {row.path}" for row in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise click.ClickException(f"{len(missing)} video file(s) missing:\n  {listed}{more}")


COMMANDS = [manifest_group]
