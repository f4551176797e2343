"""A tiny name → object registry, shared by models, tasks and techniques."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from modelshrink.errors import RegistryError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; lookups of unknown names list the known ones."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            raise RegistryError(f"{self.what} {name!r} is already registered")
        self._items[name] = item

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            self.add(name, item)
            return item

        return wrap

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.what} {name!r}; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def load_plugins(group: str) -> list[str]:
    """Import the modules other packages declare in entry-point `group` (`modelshrink.techniques`,
    `modelshrink.tasks`, `modelshrink.models`); importing one registers what it holds. Returns the entry points' names.

    A package declares, in its pyproject.toml: `[project.entry-points."modelshrink.techniques"]`
    `mine = "my_package.my_technique"`. Only installed packages (their dist-info) are read."""
    from importlib.metadata import entry_points

    names = []
    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as err:  # a broken plugin: say which, not a bare traceback from inside importlib
            raise RegistryError(
                f"plugin {ep.name!r} ({ep.value}) in entry-point group {group!r} failed to load: "
                f"{type(err).__name__}: {err}; fix or uninstall the package that declares it"
            ) from err
        names.append(ep.name)
    return names
