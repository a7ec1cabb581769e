"""Layer inputs: one array, a list of arrays or a dict of named arrays (a network's features per layer).

A loss declares such inputs in ``LossSpec.layer_inputs``; the engine converts
and checks each layer, and the gradient of a layer input has the input's
structure (a dict for a dict, a list for a list).
"""

from __future__ import annotations

from collections.abc import Mapping


def items(x) -> list:
    """[(key, array)]: the dict's keys, the list's positions, or [(None, x)] for one array."""
    if isinstance(x, Mapping):
        return list(x.items())
    if isinstance(x, (list, tuple)):
        return list(enumerate(x))
    return [(None, x)]


def label(name: str, key) -> str:
    """How an error names one layer: ``features_fake['conv1']``, ``features_fake[0]`` or ``features_fake``."""
    return name if key is None else f"{name}[{key!r}]"


def rebuild(x, values: dict):
    """``values`` (key -> array) in the structure of ``x``."""
    if isinstance(x, Mapping):
        return {k: values[k] for k in x}
    if isinstance(x, (list, tuple)):
        return [values[i] for i in range(len(x))]
    return values[None]


def map_layers(fn, x):
    """``fn(key, array)`` applied to every layer, in the structure of ``x``."""
    return rebuild(x, {k: fn(k, a) for k, a in items(x)})


def first(x):
    """The first layer's array (the one an error about the batch or dtype names first)."""
    return items(x)[0][1]
