"""Backend adapters: one module per array library, imported on first use.

An adapter owns the namespace, the devices it sees, conversion to and from
NumPy, the library's compiler and its autodiff (used by conformance only).
Importing this package imports no framework.
"""

from __future__ import annotations

import importlib

from .. import _validation
from ._base import Adapter

# canonical name -> (module, pip extra, top-level modules whose arrays it owns)
BACKENDS = {
    "numpy": ("numpy", "", ("numpy",)),
    "jax": ("jax", "jax", ("jax", "jaxlib")),
    "torch": ("torch", "torch", ("torch",)),
    "mlx": ("mlx", "mlx", ("mlx",)),
    "array_api_strict": ("array_api_strict", "test", ("array_api_strict",)),
}
_ALIASES = {"np": "numpy", "pytorch": "torch", "strict": "array_api_strict", "array-api-strict": "array_api_strict"}
_ADAPTERS: dict[str, Adapter] = {}
_LIBRARY_OF_TYPE: dict[type, str | None] = {}


def canonical(name: str) -> str:
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in BACKENDS:
        raise _validation.unknown_name("backend", name, BACKENDS)
    return key


def get_adapter(name: str) -> Adapter:
    """The adapter of backend `name`, importing its framework on first use."""
    adapter = _ADAPTERS.get(name)  # a canonical name, of a backend in use already
    if adapter is not None:
        return adapter
    key = canonical(name)
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        module, extra, _ = BACKENDS[key]
        try:
            adapter = importlib.import_module(f".{module}", __name__).ADAPTER
            adapter.xp  # noqa: B018  (imports the framework itself: a missing one fails here, with the extra to install)
        except ImportError as err:
            raise _validation.backend_missing(key, extra, err) from err
        _ADAPTERS[key] = adapter
    return adapter


def library_of(x) -> str | None:
    """Backend name owning array `x` (without importing any framework), or None."""
    kind = type(x)
    try:
        return _LIBRARY_OF_TYPE[kind]
    except KeyError:
        pass
    top = kind.__module__.partition(".")[0]
    library = next((key for key, (_, _, owners) in BACKENDS.items() if top in owners), None)
    _LIBRARY_OF_TYPE[kind] = library
    return library


def installed() -> list[str]:
    """Backends whose framework can be imported here."""
    names = []
    for key in BACKENDS:
        try:
            get_adapter(key)
        except ImportError:
            continue
        names.append(key)
    return names


__all__ = ["Adapter", "BACKENDS", "canonical", "get_adapter", "installed", "library_of"]
