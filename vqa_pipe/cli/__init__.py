"""The ``vqa-pipe`` command line: a root group; each sub-module adds its commands.

Heavy imports (torch, open_clip, zarr) happen inside the commands so that
``vqa-pipe --help`` stays instant.
"""

from __future__ import annotations

import click

from vqa_pipe import __version__


class _Root(click.Group):
    """The root group: a :class:`VqaPipeError` (or an OS error on a named file) becomes one
    line of text and exit code 1; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        from vqa_pipe.pipeline.errors import VqaPipeError

        try:
            return super().invoke(ctx)
        except VqaPipeError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            if err.filename is None:
                raise
            raise click.ClickException(f"{err.filename}: {err.strerror or err}") from None


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vqa-pipe")
@click.option(
    "--params",
    "params_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file whose section named after the command (e.g. 'extract:') gives its option "
    "defaults; options on the command line still win. This is how dvc.yaml reads params.yaml.",
)
@click.pass_context
def main(ctx: click.Context, params_file: str | None) -> None:
    """Blind video quality assessment: extract features once, regress in seconds."""
    from vqa_pipe.pipeline.device import idle_openmp_threads_sleep

    idle_openmp_threads_sleep()  # before any command imports torch
    if params_file and ctx.invoked_subcommand:
        ctx.default_map = _defaults_from(params_file, ctx.invoked_subcommand)


def _defaults_from(params_file: str, command_name: str) -> dict:
    """The params section for one command, checked against the command's options."""
    from vqa_pipe.cli.options import read_yaml

    params = read_yaml(params_file) or {}
    if not isinstance(params, dict):
        raise click.UsageError(f"{params_file}: expected a mapping of sections")
    section = params.get(command_name)
    if section is None:
        return {}
    command = main.get_command(click.get_current_context(), command_name)
    return {command_name: _check_section(section, command, f"{params_file}: {command_name}")}


def _check_section(section: object, command: click.Command, where: str) -> dict:
    """The section with its keys as the command's parameter names; unknown keys refused.

    Keys are the command's option names, with dashes or underscores (``max-frames`` or
    ``max_frames``).
    """
    if not isinstance(section, dict):
        raise click.UsageError(f"{where}: expected a mapping, got {type(section).__name__}")
    if isinstance(command, click.Group):
        out = {}
        for name, sub in section.items():
            if name not in command.commands:
                raise click.UsageError(
                    f"{where}: '{name}' is not a subcommand; valid: {sorted(command.commands)}"
                )
            out[name] = _check_section(sub, command.commands[name], f"{where}.{name}")
        return out
    valid = {p.name for p in command.params if isinstance(p, click.Option)} - {"help"}
    keys = {str(k).replace("-", "_"): v for k, v in section.items()}
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise click.UsageError(
            f"{where}: unknown keys {unknown}; valid keys (the command's options): "
            f"{sorted(valid)}"
        )
    return keys


COMMAND_MODULES = ("manifest", "extract", "demo", "features", "train", "report", "score")


def _register() -> None:
    """Add every command module's ``COMMANDS``; a module that fails to import is a bug and
    raises (never a silently missing command)."""
    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"vqa_pipe.cli.{name}")
        for command in module.COMMANDS:
            main.add_command(command)


_register()
