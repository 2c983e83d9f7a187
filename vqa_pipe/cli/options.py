"""Click options made from settings dataclasses (see ``vqa_pipe.pipeline.options``), and the
options every dataset-reading command shares.

A field ``max_frames: int = option(64, "...", min=0)`` becomes ``--max-frames INTEGER RANGE``
with its help and default; a ``bool`` field becomes a flag (``--name/--no-name`` when it
defaults to true); ``choices`` become a choice list, read when first needed (registries); a
``parse`` function checks text such as ``3x3``. The option's name is the field's name, so
``params.yaml`` keys, Python keyword arguments and command-line options are one vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from vqa_pipe.pipeline.errors import VqaPipeError
from vqa_pipe.pipeline.options import base_type, field_types, option_fields, resolve_choices

NO_OVERRIDE = object()


class LazyChoice(click.Choice):
    """A choice list computed when first needed (so listing a registry costs nothing at
    start-up)."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._cached: tuple | None = None
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple:  # type: ignore[override]
        if self._cached is None:
            self._cached = tuple(resolve_choices(self._source) or ())
        return self._cached

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ assigns; the source wins
        pass


class ParsedText(click.ParamType):
    """Text for a declared ``parse`` function; a value that is already structured (a YAML
    list such as ``branches: [semantic, spatial]`` from ``--params``) passes through as is,
    since every parse function also accepts parsed values."""

    name = "text"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return value


PARSED_TEXT = ParsedText()


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; malformed YAML is a one-line usage error naming the file and
    the place."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise click.UsageError(f"{path}: not valid YAML{at}: {problem}") from None


def _parser_callback(parse: Callable[[Any], Any]) -> Callable:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except VqaPipeError as err:
            raise click.BadParameter(str(err)) from None

    return callback


def click_option(f: dataclasses.Field, annotation: Any, default: Any = NO_OVERRIDE) -> Callable:
    """The ``click.option`` decorator of one declared field (``default`` overrides the
    field's own)."""
    meta = f.metadata
    flag = "--" + f.name.replace("_", "-")
    if default is NO_OVERRIDE:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if meta.get("show") is not None:
            default = meta["show"]  # the text form; the parse callback reads it like user input
    kind = base_type(annotation)
    kwargs: dict[str, Any] = {"help": meta["help"], "default": default, "show_default": True}
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if kind is bool:
        decls = [f"{flag}/--no-{flag[2:]}"] if default else [flag]
        kwargs["is_flag"] = True
        if not default:
            kwargs["show_default"] = False
        return click.option(*decls, f.name, **kwargs)
    if meta.get("choices") is not None:
        kwargs["type"] = LazyChoice(meta["choices"])
    elif meta.get("parse") is not None:
        kwargs["type"] = PARSED_TEXT
        kwargs["callback"] = _parser_callback(meta["parse"])
    elif kind in (int, float):
        bounded = meta.get("min") is not None or meta.get("max") is not None
        if kind is int:
            kwargs["type"] = click.IntRange(meta["min"], meta["max"]) if bounded else click.INT
        else:
            kwargs["type"] = (
                click.FloatRange(meta["min"], meta["max"]) if bounded else click.FLOAT
            )
    else:
        kwargs["type"] = click.STRING
    if default is None:
        kwargs["show_default"] = False
    return click.option(flag, f.name, **kwargs)


def options_from(
    *classes: type, exclude: Sequence[str] = (), defaults: Mapping[str, Any] | None = None
) -> Callable:
    """Decorator adding the declared options of ``classes`` to a command (in order);
    ``defaults`` overrides some fields' defaults for this command."""
    defaults = dict(defaults or {})
    fields: list[Callable] = []
    seen: dict[str, type] = {}
    for cls in classes:
        types = field_types(cls)
        for f in option_fields(cls):
            if f.name in exclude:
                continue
            if f.name in seen:
                raise RuntimeError(
                    f"option '{f.name}' is declared by both {seen[f.name].__name__} and "
                    f"{cls.__name__}: option names must be unique within a command"
                )
            seen[f.name] = cls
            fields.append(click_option(f, types[f.name], defaults.get(f.name, NO_OVERRIDE)))

    def decorate(command: Callable) -> Callable:
        for add in reversed(fields):
            command = add(command)
        return command

    return decorate


def dataset_options(*, store: bool = True, store_help: str | None = None) -> Callable:
    """``--dataset``, ``--manifest`` (and ``--store``): how every command names its data."""

    def decorate(command: Callable) -> Callable:
        if store:
            command = click.option(
                "--store",
                type=click.Path(file_okay=False, path_type=Path),
                help=store_help or "Feature store (default: features/<dataset>.zarr).",
            )(command)
        command = click.option(
            "--manifest",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Manifest CSV (default: manifests/<dataset>.csv).",
        )(command)
        command = click.option(
            "--dataset",
            help="Dataset name: manifests/<dataset>.csv and features/<dataset>.zarr.",
        )(command)
        return command

    return decorate
