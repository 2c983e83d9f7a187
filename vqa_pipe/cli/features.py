"""``vqa-pipe features import``: external feature matrices (VIDEVAL, RAPIQUE...) into a store."""

from __future__ import annotations

from pathlib import Path

import click

from vqa_pipe.cli.options import dataset_options


@click.group("features")
def features_group() -> None:
    """Feature stores: bring in features computed elsewhere."""


@features_group.command("import")
@click.argument("matrix", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dataset_options(store_help="Store to create or add to (default: features/<dataset>.zarr).")
@click.option("--name", required=True, help="Feature set name, the store branch (e.g. videval).")
@click.option("--key", help=".mat: the variable holding the matrix (default: the only one).")
@click.option("--id-column", help="CSV: the column naming each row's video.")
@click.option("--order-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Metadata CSV whose row order is the matrix's row order.")
@click.option("--order-column", help="Column of --order-file naming the videos (e.g. flickr_id).")
@click.option("--id-pattern",
              help="Regex whose first group (or match) keys both row names and video ids.")
@click.option("--part-size", type=click.IntRange(1),
              help="Videos per store part when the store is created (default 32).")
@click.option("--replace", is_flag=True,
              help="Replace an existing feature set of this name (a corrected re-import).")
@click.option("--max-matrix-gib", default=4.0, show_default=True, type=click.FloatRange(0.001),
              help="Largest matrix (as float64, GiB) the import may hold; a file declaring more "
                   "is refused before anything is allocated.")
def import_cmd(matrix, dataset, manifest, store, name, key, id_column, order_file, order_column,
               id_pattern, part_size, replace, max_matrix_gib):
    """Import a feature MATRIX (.mat, .npy or .csv; one row per video) into a feature store.

    Rows are named by --id-column (CSV), by the row order of --order-file/--order-column,
    or else follow the manifest's order. Rows with NaN are kept and counted; `vqa-pipe
    train --nan-policy` drops or imputes them and says how many.

    \b
    Example (VIDEVAL features of KoNViD-1k):
      vqa-pipe features import KONVID_1K_VIDEVAL_feats.mat --dataset konvid \\
          --name videval --order-file KONVID_1K_metadata.csv --order-column flickr_id
    """
    from vqa_pipe.pipeline.layout import resolve_dataset
    from vqa_pipe.stages.features import run_import

    paths = resolve_dataset(dataset, manifest, store)
    report = run_import(matrix, paths.manifest, name=name, store=paths.store, key=key,
                        id_column=id_column, order_file=order_file,
                        order_column=order_column, id_pattern=id_pattern,
                        part_size=part_size, replace=replace,
                        max_bytes=int(max_matrix_gib * 2**30))
    click.echo(report.summary())


COMMANDS = [features_group]
