"""One small name → constructor registry, used for datasets, backbones, heads and losses."""

from collections.abc import Callable
from typing import Generic, TypeVar

from encoding.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors; an unknown name raises `BadInput` listing the registered names.

    >>> HEADS = Registry("head")
    >>> @HEADS.register("mlp")
    ... class MLPHeads: ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, *, key: str | None = None) -> T:
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise BadInput(f"{where}unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
