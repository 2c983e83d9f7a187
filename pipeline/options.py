"""Options declared once, as dataclass fields: the stage reads them, the CLI is made from them.

A settings dataclass (a branch's configuration, a stage's run options) declares each option
with :func:`option`: its default, one line of help, and how a value is checked (choices,
bounds, a parser for text such as ``3x3``). The same declaration then gives

- the Python API: ``SemanticOptions(grid="3x3")`` or ``SemanticOptions(grid=(3, 3))``, both
  checked by :func:`check_fields` in ``__post_init__``;
- the command line: ``vqa_pipe.cli.options`` turns every field into ``--grid`` with the help,
  the default and the choices;
- ``params.yaml``: a section's keys are the option names (``grid``, ``max_frames`` or
  ``max-frames``).

Nothing here imports click: building blocks know nothing about the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vqa_pipe.pipeline.errors import VqaPipeError

MISSING = dataclasses.MISSING


class OptionError(VqaPipeError):
    """An option value that is out of range, not one of the choices, or unparseable."""


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    parse: Callable[[Any], Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    show: str | None = None,
    cli: bool = True,
    metavar: str | None = None,
    feature: bool = True,
) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default: the default value (already parsed).
        help: one line for ``--help``.
        choices: the valid values, or a callable listing them (read late: registries).
        parse: turns text (CLI, YAML) into the value; must accept an already parsed value too.
        min, max: inclusive bounds of a number.
        show: how the default is shown in ``--help`` (e.g. ``3x3`` for ``(3, 3)``).
        cli: False for fields the CLI does not expose.
        metavar: the placeholder in ``--help``.
        feature: False for options that do not change what is computed (batch sizes, file
            paths whose content is recorded otherwise): left out of :func:`feature_options`.
    """
    meta = {
        "help": help,
        "choices": choices,
        "parse": parse,
        "min": min,
        "max": max,
        "show": show,
        "cli": cli,
        "metavar": metavar,
        "feature": feature,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def resolve_choices(choices: Any) -> list[str] | None:
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field of a dataclass."""
    return typing.get_type_hints(cls)


def base_type(annotation: Any) -> Any:
    """``int`` for ``int``, ``int | None`` and ``Optional[int]``; else the annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Check a plain value against a bool/int/float/str annotation (no silent conversion)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise OptionError(f"option '{name}' must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                return int(value)
            raise OptionError(f"option '{name}' must be a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool):
            raise OptionError(f"option '{name}' must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"option '{name}' must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise OptionError(f"option '{name}' must be a finite number, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise OptionError(f"option '{name}' must be text, got {value!r}")
    return value


def check_fields(obj: Any) -> None:
    """Parse and check every :func:`option` field of a (frozen) dataclass instance in place.

    Call it from ``__post_init__``. Errors name the option and the valid values.
    """
    types = field_types(type(obj))
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if "help" not in meta:
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        if meta["parse"] is not None:
            try:
                value = meta["parse"](value)
            except OptionError:
                raise
            except VqaPipeError as err:
                raise OptionError(f"option '{f.name}': {err}") from None
        else:
            value = _coerce(f.name, value, base_type(types[f.name]))
        choices = resolve_choices(meta["choices"])
        if choices is not None and value not in choices:
            raise OptionError(
                f"option '{f.name}' got {value!r}; valid: {', '.join(map(str, choices))}"
            )
        if meta["min"] is not None and value < meta["min"]:
            raise OptionError(f"option '{f.name}' must be >= {meta['min']}, got {value!r}")
        if meta["max"] is not None and value > meta["max"]:
            raise OptionError(f"option '{f.name}' must be <= {meta['max']}, got {value!r}")
        object.__setattr__(obj, f.name, value)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` declared with :func:`option` and exposed on the command line."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli")]


def normalise_key(key: str) -> str:
    """``max-frames`` and ``max_frames`` are the same option."""
    return str(key).strip().replace("-", "_")


def pick(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of ``cls`` (keys normalised)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {normalise_key(k): v for k, v in values.items() if normalise_key(k) in names}


def unknown_keys(values: Iterable[str], *classes: type) -> list[str]:
    """Keys that are a field of none of ``classes``."""
    names = {f.name for cls in classes for f in dataclasses.fields(cls)}
    return sorted(k for k in values if normalise_key(k) not in names)


def to_plain(obj: Any) -> dict[str, Any]:
    """A JSON-ready mapping of a settings dataclass (tuples become lists)."""
    return {
        f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v
        for f in dataclasses.fields(obj)
    }


def feature_options(obj: Any) -> dict[str, Any]:
    """The options of a settings dataclass that define what it computes (JSON-ready): what a
    store records so the same features can be computed again."""
    return {
        name: value
        for name, value in to_plain(obj).items()
        if obj.__dataclass_fields__[name].metadata.get("feature", True)
    }
