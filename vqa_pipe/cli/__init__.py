"""The ``vqa-pipe`` command line: a root group; each sub-module adds its commands.

Heavy imports (torch, open_clip, zarr) happen inside the commands so that
``vqa-pipe --help`` stays instant.
"""

from __future__ import annotations

import click

from vqa_pipe import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vqa-pipe")
def main() -> None:
    """Blind video quality assessment: extract features once, regress in seconds."""


def _register() -> None:
    import importlib

    for name in ("manifest", "extract", "demo", "features", "train"):
        try:
            module = importlib.import_module(f"vqa_pipe.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"vqa_pipe.cli.{name}":
                continue  # that command group is not written yet
            raise
        for command in module.COMMANDS:
            main.add_command(command)


_register()
