"""One registry class for every extension axis: model families and variants, tasks,
training-only branches, input targets, datasets, loss weightings, refit kinds, export
formats. Imports nothing of the project, so any module can hold one.

What every axis needs, once: names in registration order (every ``choices=``, help list
and table order is derived from it), a duplicate name refused (a second plug-in of the same
name silently replacing the first is how a user's file shadows a built-in one; pass
``override=True`` when that is meant), an unknown name refused with the list of known ones
naming the flag, and discovery of a package's plug-in files (adding a plug-in is adding a
file).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "discover"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plug-ins of one ``kind`` (e.g. ``"loss weighting"``), in registration order.

    ``discover``: called once before the first lookup (a package importing its plug-in
    modules), so lookups see every built-in without their importers naming them.
    """

    def __init__(self, kind: str, flag: str = "", discover: Callable[[], None] | None = None):
        self.kind, self.flag = kind, flag
        self._items: dict[str, T] = {}
        self._discover = discover
        self._discovered = discover is None

    def _ensure(self) -> None:
        if not self._discovered:
            self._discovered = True  # before: discovery registers into this registry
            self._discover()

    def register(self, name: str, item: T, *, override: bool = False) -> T:
        """Add ``item`` under ``name``; a name already taken is refused unless ``override``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        self._ensure()  # the built-ins first: a user's plug-in cannot take their names
        if name in self._items and not override and self._items[name] is not item:
            raise ValueError(f"a {self.kind} named {name!r} is already registered; choose "
                             "another name, or pass override=True to replace it")
        self._items[name] = item
        return item

    def decorator(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """``@registry.decorator("name")`` over a class or function."""
        def wrap(item: T) -> T:
            return self.register(name, item, override=override)
        return wrap

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a plug-in of their own clean up with it)."""
        self._items.pop(name, None)

    def get(self, name: str, flag: str | None = None) -> T:
        """The plug-in ``name``; an unknown name is an error listing the known ones."""
        self._ensure()
        if name not in self._items:
            flag = self.flag if flag is None else flag
            where = f"{flag}={name}: " if flag else ""
            raise ValueError(f"{where}unknown {self.kind} {name!r}; known: "
                             f"{', '.join(self._items) or 'none'}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._items

    def names(self) -> tuple[str, ...]:
        """Every name, in registration order (for ``choices=``, help texts, tables)."""
        self._ensure()
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._ensure()
        return list(self._items.items())

    def values(self) -> list[T]:
        self._ensure()
        return list(self._items.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure()
        return len(self._items)


def discover(package: str, skip: tuple[str, ...] = (), packages_only: bool = False
             ) -> list[str]:
    """Import every module of ``package`` (its plug-in files register themselves), except
    those named in ``skip`` (``packages_only``: its sub-packages only, e.g. one folder per
    model family); returns the modules imported."""
    pkg = importlib.import_module(package)
    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in skip or (packages_only and not info.ispkg):
            continue
        importlib.import_module(f"{package}.{info.name}")
        found.append(info.name)
    return found
