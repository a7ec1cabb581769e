"""Every loss keeps to its inputs' device, and its arithmetic never reads values back to the host.

A CUDA machine is not needed to prove either: PyTorch's ``"meta"`` device has shapes, dtypes and a device but
no values. A loss called on meta tensors must return meta results of the right shapes and dtypes; an array
made on the CPU meeting a meta one fails ("Tensor on device cpu is not on the expected device meta"), as it
would on CUDA, and so does any read-back (``.item()``, ``bool()``, boolean-mask indexing). Value checks are
skipped for meta tensors (they hold no values), as under a compiler's tracing; the static check below covers
the arrays those checks make.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import _layers, registry
from mithril_losses.conformance.checks import _sample

from conftest import requires

CASE_SHAPE = (3, 5)
PACKAGE = Path(mlo.__file__).parent
# array creation from a shape or from Python values lands on the default device unless told otherwise
CREATION = re.compile(r"\bxp\.(zeros|ones|full|empty|arange|eye|linspace|asarray)\(")
# adapters, benchmark and conformance harness place arrays themselves (on a configured device)
PLACED_ELSEWHERE = ("backends", "bench", "conformance")


def _cases():
    return [pytest.param(name, options, id=f"{name}-{i}")
            for name in mlo.available() for i, options in enumerate(registry.spec(name).option_cases)]


def _meta(torch, a):
    a = np.asarray(a)
    return torch.from_numpy(a.astype(np.float32) if a.dtype.kind == "f" else a).to("meta")


@requires("torch")
@pytest.mark.parametrize("name, options", _cases())
def test_a_loss_on_meta_tensors_stays_there_and_reads_nothing_back(name, options):
    import torch

    spec = registry.spec(name)
    _, arrays = _sample(spec, options, CASE_SHAPE, 0)
    inputs = {k: _layers.map_layers(lambda _, a: _meta(torch, a), a) for k, a in arrays.items()}
    loss = mlo.get(name, **options)
    value, grads = loss.value_and_grad(**inputs)
    assert value.device.type == "meta" and value.dtype == torch.float32
    assert set(grads) == set(spec.differentiable)
    for input_name, g in grads.items():
        for (_, leaf), (_, x) in zip(_layers.items(g), _layers.items(inputs[input_name])):
            assert leaf.device.type == "meta" and leaf.shape == x.shape and leaf.dtype == x.dtype, input_name
    unreduced = mlo.get(name, **options, reduction="none")
    shape = unreduced(**inputs).shape
    engine = {"where": torch.ones(shape, dtype=torch.bool, device="meta")}
    if "weight" not in (*spec.inputs, *spec.optional_inputs):  # else `weight` is the loss's own (class weights)
        engine["weight"] = torch.ones(shape, device="meta")
    cotangent = torch.ones(shape, device="meta")
    for grads in (unreduced.vjp(cotangent, **inputs, **engine), loss.grad(**inputs, **engine)):
        assert all(leaf.device.type == "meta" for g in grads.values() for _, leaf in _layers.items(g))


def _unplaced_creations():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in PLACED_ELSEWHERE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if CREATION.search(line) and "device=" not in line and "copy=True" not in line:
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    return found


def test_loss_code_makes_no_array_without_a_device():
    """``xp.zeros(shape)`` and the like land on the default device (the CPU for PyTorch): loss code uses
    ``zeros_like``/``ones_like``/``full_like`` of an input, or ``_numerics.constant``/``arange_like``/
    ``indices_like``, which place the array on the input's device."""
    assert _unplaced_creations() == []


def test_the_static_check_finds_an_unplaced_array(tmp_path):
    line = "    bad = xp.zeros(x.shape, dtype=xp.bool)"
    assert CREATION.search(line) and "device=" not in line
    assert not CREATION.search("    bad = xp.zeros_like(x, dtype=xp.bool)")
