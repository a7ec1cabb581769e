"""Backend selection and its precedence.

Highest first: an explicit ``backend=`` argument; ``with use_backend(...)``
(a context variable, so threads and asyncio tasks do not leak into each
other); ``set_backend(...)``; the ``MITHRIL_LOSSES_BACKEND`` environment
variable; the config file (read, never written); otherwise the library of the
input arrays, and NumPy for plain Python/NumPy input.

The config file is ``$MITHRIL_LOSSES_CONFIG`` or
``$XDG_CONFIG_HOME/mithril_losses/config.json`` (``~/.config/...``), a JSON
object with the optional keys ``"backend"`` and ``"device"``. Loss calls
look at the file when they first need it and again whenever the environment
variables that place it change; ``get_backend()``, ``read_config_file()`` and
``set_backend()`` look at it anew, so an edit made while the process runs is
seen by the calls after one of them. (So a loss call in an unchanged
environment makes no ``stat``.)
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
    return _path_for(*_location())


def _location() -> tuple:
    """The environment variables that place the config file, as they are now: (explicit, xdg, home)."""
    env = os.environ
    explicit = env.get(ENV_CONFIG)
    if explicit:
        return explicit, None, None
    xdg = env.get("XDG_CONFIG_HOME")
    return None, xdg, None if xdg else env.get("HOME")


@functools.lru_cache(maxsize=16)
def _path_for(explicit, xdg, home) -> Path:
    if explicit:
        return Path(explicit)
    return Path(xdg or Path.home() / ".config") / "mithril_losses" / "config.json"


# path -> (stamp, settings, the Choice they make); the stamp is the file's (mtime, size, inode)
_file_cache: dict = {}
_INFERRED = "inferred from the inputs"
_NO_FILE = (None, {}, Choice(None, None, _INFERRED))
# (location, cache entry) of the last look at the config file; the call path reuses it for that location
_looked: tuple = (None, None)


def read_config_file(path: Path | None = None) -> dict:
    """The config file's settings ({} when there is none); malformed files raise, naming the file.

    A file named by ``$MITHRIL_LOSSES_CONFIG`` must exist. Contents are cached
    per path and modification time (with size and inode); the file is looked
    at anew on every call, and the default file's settings are what loss calls
    use from then on.
    """
    if path is None:
        return _look(_location())[1][1]
    return _read(Path(path), True)[1]


def _look(location: tuple) -> tuple:
    """Look at the config file that ``location`` places, and remember what was found for the call path."""
    global _looked
    looked = (location, _read(_path_for(*location), bool(location[0])))
    _looked = looked
    return looked


def _forget_file() -> None:
    """The next call that needs the config file looks at it anew."""
    global _looked
    _looked = (None, None)


def _read(path: Path, explicit: bool) -> tuple:
    """The cache entry of the file at ``path``: (stamp, settings, Choice)."""
    try:
        info = os.stat(path)
    except OSError:
        if explicit:
            raise _validation.bad_config(str(path), _validation.missing_config_file()) from None
        return _NO_FILE
    stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
    cached = _file_cache.get(path)
    if cached is None or cached[0] != stamp:
        settings = _parse_config_file(path)
        source = str(path) if "backend" in settings else _INFERRED
        cached = _file_cache[path] = (stamp, settings, _choice(settings.get("backend"), settings.get("device"), source))
    return cached


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
    _forget_file()


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
    choice = _context.get() or _global
    if choice is None:
        choice = _from_environment()
    return choice if device is None else Choice(choice.backend, str(device), choice.source)


def _from_environment() -> Choice:
    """The choice of ``$MITHRIL_LOSSES_BACKEND`` (and ``$MITHRIL_LOSSES_DEVICE``), else of the config file."""
    env = os.environ
    name = env.get(ENV_BACKEND)
    if name:
        return _environment_choice(name, env.get(ENV_DEVICE) or None)
    location = _location()
    looked = _looked
    if looked[0] != location:
        looked = _look(location)
    return looked[1][2]


@functools.lru_cache(maxsize=16)
def _environment_choice(name: str, device: str | None) -> Choice:
    try:
        canonical(name)
    except KeyError as err:
        raise _validation.from_source(err, f"${ENV_BACKEND}") from None
    return _choice(name, device, f"${ENV_BACKEND}")


def get_backend() -> str | None:
    """Name of the configured backend, or None when it is inferred from the inputs (the config file looked at anew)."""
    _forget_file()
    return configured().backend
