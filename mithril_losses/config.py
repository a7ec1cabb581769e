"""Backend selection and its precedence.

Highest first: an explicit ``backend=`` argument; ``with use_backend(...)``
(a context variable, so threads and asyncio tasks do not leak into each
other); ``set_backend(...)``; the ``MITHRIL_LOSSES_BACKEND`` environment
variable; the config file (read, never written); otherwise the library of the
input arrays, and NumPy for plain Python/NumPy input.

The config file is ``$MITHRIL_LOSSES_CONFIG`` or
``$XDG_CONFIG_HOME/mithril_losses/config.json`` (``~/.config/...``), a JSON
object with the optional keys ``"backend"`` and ``"device"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import _validation
from .backends import canonical

ENV_BACKEND = "MITHRIL_LOSSES_BACKEND"
ENV_DEVICE = "MITHRIL_LOSSES_DEVICE"
ENV_CONFIG = "MITHRIL_LOSSES_CONFIG"
_FILE_KEYS = ("backend", "device")


@dataclass(frozen=True)
class Choice:
    """A configured backend (None: infer from the inputs), its device, and where it came from."""

    backend: str | None
    device: str | None
    source: str


_context: contextvars.ContextVar[Choice | None] = contextvars.ContextVar("mithril_losses_backend", default=None)
_global: Choice | None = None


def config_path() -> Path:
    env = os.environ
    return _path_for(env.get(ENV_CONFIG), env.get("XDG_CONFIG_HOME"), env.get("HOME"))


@functools.lru_cache(maxsize=16)
def _path_for(explicit, xdg, home) -> Path:
    if explicit:
        return Path(explicit)
    return Path(xdg or Path.home() / ".config") / "mithril_losses" / "config.json"


_file_cache: dict = {}


def read_config_file(path: Path | None = None) -> dict:
    """The config file's settings ({} when there is none); malformed files raise, naming the file.

    A file named by ``$MITHRIL_LOSSES_CONFIG`` must exist. Contents are cached
    per path and modification time, so the call path pays one ``stat``.
    """
    explicit = path is not None or bool(os.environ.get(ENV_CONFIG))
    path = config_path() if path is None else Path(path)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        if explicit:
            raise _validation.bad_config(str(path), _validation.missing_config_file()) from None
        return {}
    cached = _file_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    _file_cache[path] = (stamp, _parse_config_file(path))
    return _file_cache[path][1]


def _parse_config_file(path: Path) -> dict:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:  # a directory, no permission, not UTF-8
        raise _validation.bad_config(source, _validation.unreadable(err)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise _validation.bad_config(source, _validation.not_parsable("JSON", err)) from None
    if not isinstance(data, dict):
        raise _validation.bad_config(source, _validation.not_a_json_object(data))
    _validation.check_file_keys(source, data, _FILE_KEYS, required=())
    for key in _FILE_KEYS:
        if key in data and not isinstance(data[key], str):
            raise _validation.bad_config(source, _validation.setting_not_a_string(key, data[key]))
    if "backend" in data:
        try:
            canonical(data["backend"])
        except KeyError as err:
            raise _validation.bad_config(source, err.args[0]) from None
    return data


def _choice(backend, device, source) -> Choice:
    return Choice(None if backend is None else canonical(backend), None if device is None else str(device), source)


def set_backend(backend: str | None, *, device: str | None = None) -> None:
    """Process-wide default backend (None clears it, back to env/file/inference)."""
    global _global
    _global = None if backend is None else _choice(backend, device, "set_backend()")


@contextlib.contextmanager
def use_backend(backend: str, *, device: str | None = None):
    """Use `backend` (and `device`) inside the block, for this thread or task only."""
    token = _context.set(_choice(backend, device, "use_backend()"))
    try:
        yield
    finally:
        _context.reset(token)


def configured(backend: str | None = None, device: str | None = None) -> Choice:
    """The configured choice by precedence; ``backend=None`` in the result means infer."""
    if backend is not None:
        return _choice(backend, device, "backend= argument")
    for choice in (_context.get(), _global):
        if choice is not None:
            return choice if device is None else Choice(choice.backend, str(device), choice.source)
    if os.environ.get(ENV_BACKEND):
        try:
            canonical(os.environ[ENV_BACKEND])
        except KeyError as err:
            raise _validation.from_source(err, f"${ENV_BACKEND}") from None
        return _choice(os.environ[ENV_BACKEND], device or os.environ.get(ENV_DEVICE) or None,
                       f"${ENV_BACKEND}")
    settings = read_config_file()
    if "backend" in settings:
        return _choice(settings["backend"], device or settings.get("device"), str(config_path()))
    return Choice(None, device or settings.get("device"), "inferred from the inputs")


def get_backend() -> str | None:
    """Name of the configured backend, or None when it is inferred from the inputs."""
    return configured().backend
