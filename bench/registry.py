"""A name -> object registry that refuses duplicates and reports unknown names to the user."""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from bench.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Insertion-ordered registry; `bench list` and the parametrized tests read these."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(self._items)
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {known}")
        return self._items[name]

    def snapshot(self) -> dict[str, T]:
        """The current entries, for `restore` (plug-in loading undoes a failed import with it)."""
        return dict(self._items)

    def restore(self, snapshot: dict[str, T]) -> None:
        self._items = dict(snapshot)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
