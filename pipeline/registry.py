"""One registry helper for every named choice: regressors, datasets, backbones, branches.

Each registry has the same three verbs, in the spirit of timm's ``@register_model`` and
open_clip's ``list_models()``:

- ``REG.register(name)`` (a decorator) or ``REG.register(name, item)``;
- ``REG.names()`` for listings and CLI choices;
- ``REG.get(name)``, whose error names the kind and lists the valid choices.

A registry may be backed by a package of modules named after their entries
(``pipeline/regressors/svr.py`` registers ``svr``): ``names()`` then lists them without
importing them, so ``vqa-pipe --help`` stays instant, and ``get()`` imports the one asked for.
Adding an entry is adding one module; nothing else is kept in step by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from vqa_pipe.pipeline.errors import VqaPipeError

T = TypeVar("T")


class UnknownNameError(VqaPipeError):
    """A name that no registry entry has; the message lists the valid ones."""


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what the entries are, for messages ("regressor", "dataset", ...).
        package: optional dotted package whose public modules are entries of the same name,
            imported on first use (each must register its own name).
        error: the error class raised for unknown names (a :class:`VqaPipeError`).
    """

    def __init__(
        self,
        kind: str,
        *,
        package: str | None = None,
        error: type[VqaPipeError] = UnknownNameError,
    ) -> None:
        self.kind = kind
        self.package = package
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, item: T | None = None, *, replace: bool = False):
        """Add ``item`` under ``name``; without ``item``, a decorator that adds what it wraps.

        Registering another item under a taken name is refused unless ``replace``.
        """

        def add(obj: T) -> T:
            old = self._entries.get(name)
            if old is not None and old is not obj and old != obj and not replace:
                raise self.error(f"a {self.kind} named '{name}' is already registered")
            self._entries[name] = obj
            return obj

        return add if item is None else add(item)

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and examples clean up after themselves)."""
        self._entries.pop(name, None)

    def _package_modules(self) -> list[str]:
        if self.package is None:
            return []
        package = importlib.import_module(self.package)
        modules = pkgutil.iter_modules(package.__path__)
        return [m.name for m in modules if not m.name.startswith("_")]

    def names(self) -> list[str]:
        """Every entry's name: in registration order, or sorted for a package-backed registry."""
        if self.package is None:
            return list(self._entries)
        return sorted(set(self._entries) | set(self._package_modules()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._package_modules()

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name is an error listing the valid ones."""
        if name not in self._entries and name in self._package_modules():
            importlib.import_module(f"{self.package}.{name}")
            if name not in self._entries:
                raise self.error(
                    f"module {self.package}.{name} does not register a {self.kind} named '{name}'"
                )
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} '{name}'; valid: {', '.join(self.names()) or 'none'}"
            ) from None

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` for every entry (imports package modules)."""
        return [(name, self.get(name)) for name in self.names()]


def lazy_choices(registry: Registry, *extra: str) -> Callable[[], list[str]]:
    """A zero-argument callable listing ``extra`` + the registry's names, for late CLI choices."""
    return lambda: [*extra, *registry.names()]
