"""Names a package offers but loads only when first used (PEP 562 module ``__getattr__``).

Used where importing a package for one light module must not pull in a heavy dependency of
another (the resource-server library imports ``rfc9396``'s vocabulary and ``jose``'s JWKS cache,
never pydantic, jsonschema or PyJWT)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["load_on_use"]


def load_on_use(package: str, namespace: dict[str, Any], names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps each name to the submodule that
    defines it; the value is imported on first use and kept in ``namespace`` (the package's
    globals), so later uses are plain attribute reads."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__
