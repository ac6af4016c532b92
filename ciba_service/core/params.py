"""Request parameters as the form sent them, with the OAuth rule that a parameter must not
be repeated (RFC 6749 3.1 / 3.2: "Request and response parameters MUST NOT be included more
than once")."""

from __future__ import annotations

from collections.abc import Iterable

from ciba_service.core.errors import InvalidRequest

__all__ = ["Params"]


class Params:
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in pairs:
            self._values.setdefault(key, []).append(value)

    def optional(self, name: str) -> str | None:
        values = self._values.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise InvalidRequest(f"parameter '{name}' is included more than once")
        # An empty value is treated as absent (RFC 6749 3.1: "Parameters sent without a value
        # MUST be treated as if they were omitted from the request").
        return values[0] if values[0] != "" else None

    def required(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            raise InvalidRequest(f"missing required parameter '{name}'")
        return value

    def __contains__(self, name: str) -> bool:
        return self.optional(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, vs in self._values.items() for v in vs]
