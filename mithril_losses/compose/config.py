"""Objectives from configs: ``from_config`` for nested loss and composite configs, ``load_objective`` for files.

A composite config is a dict tagged with its kind, ``{"composite": "weighted",
...}``, whose parts are loss configs (``{"name": "mse", ...}``) or composite
configs again. Only registered losses, the kinds below and the schedules of
``LossScheduler`` are built; nothing is imported or evaluated from a string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .. import _validation, registry
from ..backends import canonical
from .multitask import MultiOutputLoss, UncertaintyWeightedLoss
from .objectives import CompositeLoss, LossCollection, ScheduledLoss, WeightedLoss
from .regularization import Regularization
from .schedules import LossScheduler


def _weighted(cfg, path, build):
    return WeightedLoss, (build(cfg["loss"], f"{path}.loss"),), {"weight": cfg.get("weight", 1.0),
                                                               "name": cfg.get("name"), "inputs": cfg.get("inputs")}


def _scheduled(cfg, path, build):
    try:
        schedule = LossScheduler.from_config(cfg["schedule"])
    except (KeyError, TypeError, ValueError) as err:
        raise _validation.at_config_path(err, f"{path}.schedule") from None
    return ScheduledLoss, (build(cfg["loss"], f"{path}.loss"), schedule), {
        "step": cfg.get("step", 0), "name": cfg.get("name"), "inputs": cfg.get("inputs")}


def _named(cls, key):
    """A builder for ``cls``, made of named parts under ``key``."""
    def builder(cfg, path, build):
        parts = cfg[key]
        if not isinstance(parts, Mapping):
            raise _validation.bad_objective_config(f"{path}.{key}", f"expected a dict name -> config, got {parts!r}.")
        built = {name: build(part, f"{path}.{key}[{name!r}]") for name, part in parts.items()}
        return cls, (built,), {"name": cfg["name"]} if "name" in cfg else {}
    return builder


def _regularization(cfg, path, build):
    return Regularization, (cfg["norm"],), {"weight": cfg["weight"], "name": cfg.get("name")}


# kind -> (builder, required keys, optional keys); a builder returns (class, args, keywords)
_KINDS = {
    "weighted": (_weighted, ("loss",), ("weight", "name", "inputs")),
    "scheduled": (_scheduled, ("loss", "schedule"), ("step", "name", "inputs")),
    "composite": (_named(CompositeLoss, "parts"), ("parts",), ("name",)),
    "collection": (_named(LossCollection, "parts"), ("parts",), ("name",)),
    "uncertainty_weighted": (_named(UncertaintyWeightedLoss, "tasks"), ("tasks",), ("name",)),
    "multi_output": (_named(MultiOutputLoss, "outputs"), ("outputs",), ("name",)),
    "regularization": (_regularization, ("norm", "weight"), ("name",)),
}


def from_config(config: dict):
    """Rebuild a loss or an objective from its ``to_config()`` (nested); malformed configs raise, naming where."""
    return _build(config, "config")


def _build(cfg, path: str):
    if not isinstance(cfg, Mapping):
        raise _validation.bad_objective_config(path, f"expected a dict (a loss or composite config), got {cfg!r}.")
    if "composite" not in cfg:
        try:
            return registry.from_config(dict(cfg))
        except (KeyError, TypeError, ValueError) as err:
            raise _validation.at_config_path(err, path) from None
    kind = cfg["composite"]
    if not isinstance(kind, str) or kind not in _KINDS:
        raise _validation.at_config_path(_validation.unknown_name("composite kind", kind, _KINDS), path)
    builder, required, optional = _KINDS[kind]
    _validation.check_config_keys(path, kind, cfg, required, optional)
    cls, args, keywords = builder(cfg, path, _build)
    try:
        return cls(*args, **keywords)
    except (KeyError, TypeError, ValueError) as err:
        raise _validation.at_config_path(err, path) from None


_FILE_KEYS = ("backend", "objective")


def load_objective(path) -> tuple:
    """``(objective, backend)`` from a JSON (``.json``) or TOML (``.toml``) file.

    The file holds ``{"backend": "torch", "objective": {...}}``: an objective
    config (a loss config or a composite config, nested) and optionally the
    backend to compute it with (``None`` when the file names none: inferred
    from the inputs). Switching a whole objective to another backend is one
    edit of the file; use it as ``objective.value_and_grad(..., backend=backend)``
    or inside ``with mlo.use_backend(backend):``. TOML needs Python 3.11+
    (``tomllib``) or the ``tomli`` package. Errors name the file and the problem.
    """
    path = Path(path)
    data = _read(path)
    if not isinstance(data, dict):
        raise _validation.bad_config(str(path), _validation.not_a_table(data))
    _validation.check_file_keys(str(path), data, _FILE_KEYS, required=("objective",))
    backend = data.get("backend")
    if backend is not None:
        try:
            backend = canonical(backend)
        except KeyError as err:
            raise _validation.bad_config(str(path), err.args[0]) from None
    try:
        return _build(data["objective"], "objective"), backend
    except (KeyError, TypeError, ValueError) as err:
        raise _validation.in_file(err, str(path)) from None


def _read(path: Path):
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise _validation.bad_config(str(path), _validation.objective_file_type(path.suffix))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise _validation.bad_config(str(path), _validation.unreadable(err)) from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise _validation.bad_config(str(path), _validation.not_parsable("JSON", err)) from None
    toml = _toml_module(path)
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as err:
        raise _validation.bad_config(str(path), _validation.not_parsable("TOML", err)) from None


def _toml_module(path: Path):
    """``tomllib`` (Python 3.11+), else the ``tomli`` package."""
    try:
        import tomllib

        return tomllib
    except ImportError:
        pass
    try:
        import tomli

        return tomli
    except ImportError:
        raise _validation.bad_config(str(path), _validation.toml_unavailable()) from None
