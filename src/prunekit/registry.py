"""A named registry with 'did you mean' errors: one table per fact (criteria, schedules...)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from prunekit.errors import InvalidParameterError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually classes or factories) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise InvalidParameterError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InvalidParameterError(
                f"unknown {self.kind} '{name}'{hint}; known: {', '.join(sorted(self._items))}"
            ) from None

    def resolve(self, value: "str | T", *, param: str, owner: str) -> T:
        """A callable given directly, or the registered item of that name, with the standard message."""
        if callable(value):
            return value  # type: ignore[return-value]
        if not isinstance(value, str) or value not in self._items:
            raise InvalidParameterError(
                f"The '{param}' parameter of {owner} must be one of {self.names()} or a callable. "
                f"Got {value!r} instead."
            )
        return self._items[value]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
