"""Validation sweep over every registered loss: dtypes, shapes, value domains, options, cotangents.

Each test is parametrised over ``mlo.available()`` (ids are the loss names), so a
loss registered later is covered without new test code. Inputs come from each
spec's own ``sample`` (float64 NumPy, case shape ``(3, 5)``), one input is made
wrong, and the error must be a ``TypeError``/``ValueError`` whose message names
that argument in backticks and shows what was received: the dtype, the shape,
the offending value or option value.

- dtypes: every input that must be floating, cast to int64 and to bool, is a
  TypeError; an integer label cast to float64 is either accepted (floats are a
  documented form: probabilities, soft labels) or rejected naming it.
- shapes (losses with more than one array): every input with an extra leading
  axis of size 2, and every input after the first with its last axis one entry
  shorter, is a ValueError. The extra axis also defeats the inputs that
  legitimately broadcast (``pos_weight`` and ``multilabel_soft_margin``'s
  ``weight`` to the input, ``ranking_softmax``'s ``mask`` and ``weights`` to the
  scores, ``gaussian_nll``'s ``var`` in PyTorch's reduced forms): a larger array
  never broadcasts. The first input is never shortened: its last axis is often
  the class or feature axis, whose size is free.
- empty axes: every input with an empty first axis (a batch) or last axis
  (classes, features, a list) computes a finite loss or is a ValueError naming
  the input, never an error from inside the arithmetic nor a silent NaN.
- domains: each spec's ``domains`` are probed just outside (the next float past a
  closed end, the end itself for an open one, -1e6/1e6 past an end that is a
  size taken from the inputs, a box with x2 < x1), and a grid of values checks
  that every value a ``validate`` rejects is declared, and that declared numeric
  domains are what is enforced.
- options: values of a wrong type, NaN and infinities are rejected at
  ``mlo.get``; a grid of numbers is either rejected there, naming the option and
  the value, or accepted and then computes or raises a clear error on valid
  inputs (no crash); a misspelt option name suggests the right one.
- cotangents: a wrong-shaped cotangent in ``vjp`` is a ValueError, never a
  broadcast, for reductions "none" and "mean".

``MITHRIL_LOSSES_SWEEP=full`` runs the domain probes on every installed backend
(the quick profile: NumPy, PyTorch and array-api-strict).
"""

from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import registry
from mithril_losses.conformance.checks import _leaves, _sample, _with_leaves

from conftest import BACKENDS, installed, native

FULL = os.environ.get("MITHRIL_LOSSES_SWEEP", "quick") == "full"
DOMAIN_BACKENDS = BACKENDS if FULL else ("numpy", "torch", "array_api_strict")
CASE_SHAPE = (3, 5)
SEED = 20240611
LOSSES = mlo.available()
WITH_DOMAINS = [n for n in LOSSES if registry.spec(n).domains]

# Inputs (after the first) whose last axis has a free size, so a shorter one is a valid shape.
FREE_LAST_AXIS = {("mase", "insample"): "the in-sample history may have any length above the seasonality",
                  ("ctc", "targets"): "padded targets may have any width that holds the longest target"}

# Far past an end that is a size taken from the inputs (classes, frames, bins): beyond any size of the sweep's cases.
FAR = 10**6
TINY = float(np.finfo(np.float64).tiny)
FLOAT_GRID = (-1e6, -1.0, -0.5, -5e-324, 0.0, 0.5, 1.0, float(np.nextafter(1.0, 2.0)), 1.5, 2.0, 1e6)
INTEGER_GRID = (-FAR, -2, -1, 0, 1, 2, FAR)


# --------------------------------------------------------------------------- cases


def _case(name, options=None, k=0):
    """(spec, options, inputs, leaves): a spec's own sample; leaves are [(label, array)] of every input array."""
    spec = registry.spec(name)
    options = spec.option_cases[0] if options is None else options
    _, inputs = _sample(spec, options, CASE_SHAPE, SEED + k)
    return spec, options, inputs, _leaves(inputs, _present(spec, inputs))


def _cases(name):
    """``_case`` for every option case of the loss."""
    return [_case(name, options, k) for k, options in enumerate(registry.spec(name).option_cases)]


def _present(spec, inputs):
    return [n for n in spec.inputs if n in inputs]


def _with_leaf(spec, inputs, leaves, i, new):
    """``inputs`` with the ``i``-th leaf replaced by ``new``."""
    return _with_leaves(inputs, _present(spec, inputs), [new if j == i else a for j, (_, a) in enumerate(leaves)])


def _input_of(label):
    """The input a leaf label belongs to: ``features_fake['conv1']`` -> ``features_fake``."""
    return label.partition("[")[0]


def _kind(a):
    return "bool" if a.dtype == bool else "integral" if a.dtype.kind in "iu" else "real floating"


def _call(name, options, inputs, **kwargs):
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # out-of-range values may overflow: not checked here
        warnings.simplefilter("ignore")
        return mlo.get(name, **options)(**inputs, **kwargs)


def _shown(value):
    """How a message shows a received number."""
    return str(int(value)) if isinstance(value, (int, np.integer)) else repr(float(value))


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", LOSSES)
def test_floating_inputs_reject_integer_and_bool_dtypes(name):
    for spec, options, inputs, leaves in _cases(name):
        floating = [(i, label, a) for i, (label, a) in enumerate(leaves) if _input_of(label) not in spec.label_inputs]
        assert floating, f"{name} has no floating input"
        for i, label, a in floating:
            for dtype in ("int64", "bool"):
                with pytest.raises(TypeError) as err:
                    _call(name, options, _with_leaf(spec, inputs, leaves, i, np.asarray(a).astype(dtype)))
                assert f"`{label}`" in str(err.value) and dtype in str(err.value), f"{options}: {err.value}"


@pytest.mark.parametrize("name", [n for n in LOSSES if registry.spec(n).label_inputs])
def test_integer_labels_as_floats_are_accepted_or_named(name):
    for spec, options, inputs, leaves in _cases(name):
        for i, (label, a) in enumerate(leaves):
            a = np.asarray(a)
            if _input_of(label) not in spec.label_inputs or a.dtype.kind not in "iub":
                continue
            try:
                _call(name, options, _with_leaf(spec, inputs, leaves, i, a.astype(np.float64)))
            except TypeError as err:  # floats are not a form of this label
                assert f"`{label}`" in str(err) and "float64" in str(err), f"{options}: {err}"
            except ValueError as err:  # floats are another form (per-class values of the input's shape)
                assert f"`{label}`" in str(err) and str(a.shape) in str(err), f"{options}: {err}"


# --------------------------------------------------------------------------- shapes


def _free_last_axis(spec, name, options):
    """Whether the last axis of input ``name`` may have any size, so that a shorter one is a valid shape."""
    # features compared by their channels only (style, contextual): with channel_axis=1 the last axis is a position
    return (spec.name, name) in FREE_LAST_AXIS or (name in spec.layer_inputs and options.get("channel_axis", -1) != -1)


def _shape_mutations(spec, options, label, a):
    """(what, wrong array): an extra leading axis of size 2; the last axis one entry shorter for later inputs."""
    yield "an extra leading axis", np.stack([a, a])
    name = _input_of(label)
    if name != spec.inputs[0] and a.ndim and a.shape[-1] > 1 and not _free_last_axis(spec, name, options):
        yield "the last axis one entry shorter", a[..., :-1]


def _names_a_shape(message, arrays):
    """The message names an input in backticks and shows that input's received shape (a 1-D one's length will do)."""
    for label, a in arrays:
        if f"`{label}`" in message:
            shape = tuple(np.shape(a))
            if str(shape) in message or (len(shape) == 1 and f"got {shape[0]}" in message):
                return True
    return False


@pytest.mark.parametrize("name", [n for n in LOSSES if len(_case(n)[3]) > 1])
def test_incompatible_shapes_are_named(name):
    mutated = set()
    for spec, options, inputs, leaves in _cases(name):
        for i, (label, a) in enumerate(leaves):
            mutated.add(_input_of(label))
            for what, wrong in _shape_mutations(spec, options, label, np.asarray(a)):
                with pytest.raises(ValueError) as err:
                    _call(name, options, _with_leaf(spec, inputs, leaves, i, wrong))
                arrays = [(lab, wrong if j == i else b) for j, (lab, b) in enumerate(leaves)]
                assert _names_a_shape(str(err.value), arrays), f"{options} {label} with {what}: {err.value}"
    assert mutated == set(spec.inputs), f"inputs no option case samples: {set(spec.inputs) - mutated}"


def _emptied(a, axis):
    """``a`` with none of the entries along ``axis`` (a 0-d array as it is)."""
    return np.take(a, [], axis=axis) if a.ndim else a


@pytest.mark.parametrize("axis", [0, -1], ids=["first axis", "last axis"])
@pytest.mark.parametrize("name", LOSSES)
def test_empty_axes_compute_or_are_named(name, axis):
    """Every input with an empty first (a batch) or last axis (classes, features, a list): the loss computes
    (a finite value, gradients of the inputs' shapes) or raises a ValueError naming an input and showing its
    shape or the empty size ("got 0"), never an error from inside the arithmetic nor a silent NaN."""
    for spec, options, inputs, leaves in _cases(name):
        empty = [(label, _emptied(np.asarray(a), axis)) for label, a in leaves]
        cut = _with_leaves(inputs, _present(spec, inputs), [a for _, a in empty])
        try:
            value, grads = mlo.get(name, **options).value_and_grad(**cut)
        except ValueError as err:
            named = any(f"`{label}`" in str(err) for label, _ in empty)
            assert _names_a_shape(str(err), empty) or (named and "got 0" in str(err)), f"{options}: {err}"
            continue
        assert np.all(np.isfinite(value)), f"{options}: the loss is {value}"
        for (label, g), (_, a) in zip(_leaves(grads, spec.differentiable), _leaves(cut, spec.differentiable)):
            assert np.shape(g) == np.shape(a), label


# --------------------------------------------------------------------------- domains


def _end(text):
    """A numeric interval end as a float (inf included), or None for an end that is a size from the inputs."""
    try:
        return float(text)
    except ValueError:
        return None


def _parse(domain):
    """("boxes",), ("set", values) or ("interval", low, low_closed, high, high_closed); None ends are sizes."""
    if domain == "boxes":
        return ("boxes",)
    if domain.startswith("{") and domain.endswith("}"):
        return ("set", tuple(sorted(float(v) for v in domain[1:-1].split(","))))
    match = re.fullmatch(r"([\[(])([^,]+),([^,]+)([\])])", domain.replace(" ", ""))
    assert match, f"malformed domain {domain!r}"
    left, low, high, right = match.groups()
    return ("interval", _end(low), left == "[", _end(high), right == "]")


def _numeric(parsed):
    """Whether membership can be decided here (no end that is a size from the inputs, not boxes)."""
    return parsed[0] == "set" or (parsed[0] == "interval" and None not in (parsed[1], parsed[3]))


def _inside(parsed, v):
    if parsed[0] == "set":
        return v in parsed[1]
    _, low, low_closed, high, high_closed = parsed
    return (v >= low if low_closed else v > low) and (v <= high if high_closed else v < high)


def _next_float(v, direction):
    """The float next to ``v`` (``direction`` -1 below, +1 above), a normal number: XLA flushes subnormals to 0."""
    out = float(np.nextafter(v, direction * math.inf))
    return direction * TINY if abs(out) < TINY else out


def _past(end, closed, integer, direction):
    """The first value outside an interval's end (``direction`` -1 below the low end, +1 above the high one)."""
    if end is None:
        return direction * FAR
    if not closed:
        return int(end) if integer else end
    return int(end) + direction if integer else _next_float(end, direction)


def _scalar_probes(parsed, integer):
    """Values just outside a set or an interval."""
    if parsed[0] == "set":
        values = parsed[1]
        gaps = [(a + b) / 2 for a, b in zip(values, values[1:])]
        if integer:
            return [int(values[0]) - 1, int(values[-1]) + 1] + [int(g) for g in gaps if g == int(g)]
        return [_next_float(values[0], -1), _next_float(values[-1], 1)] + gaps
    _, low, low_closed, high, high_closed = parsed
    ends = ((low, low_closed, -1), (high, high_closed, 1))
    return [_past(end, closed, integer, direction) for end, closed, direction in ends
            if end is None or math.isfinite(end)]


def _outside(domain, a):
    """[(wrong array, what the message must show)]: ``a`` with one entry just outside ``domain``."""
    parsed = _parse(domain)
    if parsed[0] == "boxes":  # box 0 with x2 < x1, and one with y2 < y1
        probes = []
        for lo, hi in ((0, 2), (1, 3)):
            b = a.reshape(-1, 4).copy()
            b[0, lo], b[0, hi] = b[0, hi], b[0, lo]
            probes.append((b.reshape(a.shape), str(tuple(float(v) for v in b[0]))))
        return probes
    probes = []
    for v in _scalar_probes(parsed, a.dtype.kind in "iu"):
        b = a.copy()
        b.flat[0] = v
        probes.append((b, _shown(v)))
    return probes


def _domain_probes(name):
    """(options, inputs, leaves, i, label, wrong array, shown) for every declared domain in every option case."""
    spec = registry.spec(name)
    for k, options in enumerate(spec.option_cases):
        _, _, inputs, leaves = _case(name, options, k)
        normalised = mlo.get(name, **options).options
        for i, (label, a) in enumerate(leaves):
            a = np.asarray(a)
            a = a.astype(np.int64) if a.dtype == bool else a  # a 0/1 mask's values: in its integer form
            domain = spec.domain(_input_of(label), normalised, _kind(a))
            if domain is None:
                continue
            for wrong, shown in _outside(domain, a):
                if shown != str(normalised.get("ignore_index")):  # the ignored label is valid by definition
                    yield options, inputs, leaves, i, label, wrong, shown


@pytest.mark.parametrize("name", WITH_DOMAINS)
def test_values_just_outside_the_domains_are_named(name):
    spec = registry.spec(name)
    probes = list(_domain_probes(name))
    assert probes, f"{name} declares domains that no option case samples"
    for options, inputs, leaves, i, label, wrong, shown in probes:
        with pytest.raises(ValueError) as err:
            _call(name, options, _with_leaf(spec, inputs, leaves, i, wrong))
        assert f"`{label}`" in str(err.value) and shown in str(err.value), f"{options} {shown}: {err.value}"


@pytest.mark.parametrize("backend", DOMAIN_BACKENDS[1:])
@pytest.mark.parametrize("name", WITH_DOMAINS)
def test_values_outside_the_domains_on_backend(name, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    spec = registry.spec(name)
    for options, inputs, leaves, i, label, wrong, shown in _domain_probes(name):
        arrays = [native(backend, wrong if j == i else np.asarray(a)) for j, (_, a) in enumerate(leaves)]
        with pytest.raises(ValueError) as err:
            _call(name, options, _with_leaves(inputs, _present(spec, inputs), arrays), backend=backend)
        assert f"`{label}`" in str(err.value) and shown in str(err.value), f"{options} {shown}: {err.value}"


def _grid_outcomes(name):
    """(options, label, domain, value, rejected) for a grid of values at the first entry of every input array."""
    spec = registry.spec(name)
    for k, options in enumerate(spec.option_cases):
        _, _, inputs, leaves = _case(name, options, k)
        normalised = mlo.get(name, **options).options
        for i, (label, a) in enumerate(leaves):
            a = np.asarray(a)
            if a.dtype == bool:
                continue
            domain = spec.domain(_input_of(label), normalised, _kind(a))
            for v in INTEGER_GRID if a.dtype.kind in "iu" else FLOAT_GRID:
                b = a.copy()
                b.flat[0] = v
                try:
                    _call(name, options, _with_leaf(spec, inputs, leaves, i, b))
                except ValueError as err:
                    assert f"`{label}`" in str(err), f"{options}: {label} = {v} rejected without naming it: {err}"
                    yield options, label, domain, v, True
                else:
                    yield options, label, domain, v, False


@pytest.mark.parametrize("name", LOSSES)
def test_every_value_check_is_a_declared_domain(name):
    """A value ``validate`` rejects lies outside a declared domain; a declared numeric domain is what is enforced."""
    for options, label, domain, v, rejected in _grid_outcomes(name):
        if domain is None:
            assert not rejected, f"{options}: {label} = {v} is rejected, but no domain is declared for it"
            continue
        parsed = _parse(domain)
        if _numeric(parsed) and v != options.get("ignore_index"):
            assert rejected != _inside(parsed, v), f"{options}: {label} = {v} against the declared {domain!r}"


@pytest.mark.parametrize("name", LOSSES)
def test_domains_are_well_formed(name):
    spec = registry.spec(name)
    option_names = set(spec.own_options)
    for input_name, entry in spec.domains.items():
        assert input_name in spec.inputs, f"domain of {input_name!r}, which {name} does not take"
        for domain, when in ((entry, {}),) if isinstance(entry, str) else entry:
            _parse(domain)
            assert set(when) <= option_names | {"dtype"}, when
            assert when.get("dtype", "integral") in ("integral", "real floating"), when


# --------------------------------------------------------------------------- options


def _wrong_values(option):
    """Values no option of this default's type accepts: wrong types, NaN and infinities."""
    default = option.default
    if isinstance(default, bool):
        return ["yes", None, 1, 0.5]
    if isinstance(default, str):
        return ["no_such_choice", 1, True]
    if default is None:
        return ["bad", math.nan, True, ["bad"]]
    return ["bad", math.nan, math.inf, -math.inf, True, ["bad"]]


ENGINE_WRONG_VALUES = {"reduction": ["no_such_reduction", None, 1], "axis": ["bad", 1.5, True, ["bad"]]}


def _assert_names(err, option, value):
    message = str(err)
    shown = "'bad'" if isinstance(value, list) else repr(value)
    assert f"`{option}" in message and shown in message, message


@pytest.mark.parametrize("name", LOSSES)
def test_wrong_option_values_are_rejected_at_get(name):
    spec = registry.spec(name)
    wrong = {o.name: _wrong_values(o) for o in spec.options}
    wrong.update({k: v for k, v in ENGINE_WRONG_VALUES.items() if k in spec.option_names and k not in wrong})
    for option, values in wrong.items():
        for value in values:
            with pytest.raises((TypeError, ValueError)) as err:
                mlo.get(name, **{option: value})
            _assert_names(err.value, option, value)


@pytest.mark.parametrize("name", LOSSES)
def test_numeric_options_are_rejected_at_get_or_work(name):
    """Each number of a grid is rejected at ``get`` (naming the option and the value), or the loss computes on
    valid inputs, or it raises a clear ValueError there (a check against the inputs or another option)."""
    spec, _, inputs, leaves = _case(name, {})
    labels = [label for label, _ in leaves]
    for option in spec.options:
        if isinstance(option.default, (bool, str)):
            continue
        grid = INTEGER_GRID if isinstance(option.default, int) else FLOAT_GRID
        for value in (None, *grid):
            try:
                mlo.get(name, **{option.name: value})
            except (TypeError, ValueError) as err:
                _assert_names(err, option.name, value)
                continue
            try:
                _call(name, {option.name: value}, inputs)
            except ValueError as err:
                named = [n for n in (*spec.option_names, *labels) if f"`{n}`" in str(err)]
                assert named, f"{option.name}={value!r}: {err}"


def _typos(option):
    yield option + option[-1]
    if len(option) > 1 and option[0] != option[1]:
        yield option[1] + option[0] + option[2:]


@pytest.mark.parametrize("name", LOSSES)
def test_misspelt_options_suggest_the_right_name(name):
    spec = registry.spec(name)
    for option in spec.option_names:
        for typo in _typos(option):
            with pytest.raises(TypeError) as err:
                mlo.get(name, **{typo: 1})
            message = str(err.value)
            suggestion = re.search(r"Did you mean ([^?]*)\?", message)
            assert f"`{typo}`" in message and suggestion and option in suggestion.group(1).split(", "), message
    with pytest.raises(TypeError) as err:
        mlo.get(name, no_such_option_at_all=1)
    assert "Did you mean" not in str(err.value)
    assert all(option in str(err.value) for option in spec.option_names), str(err.value)


# --------------------------------------------------------------------------- cotangents


def _wrong_cotangent_shapes(shape):
    """Shapes that differ from the loss output's, most of which NumPy would broadcast against it."""
    wrong = [(2,) + shape, shape + (1,), shape + (2,)]
    if shape:
        wrong += [shape[:-1], (), (1,) * len(shape), (1,) + shape[1:]]
    else:
        wrong += [(1,)]
    return [s for s in dict.fromkeys(wrong) if s != shape]


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name", LOSSES)
def test_wrong_cotangent_shapes_are_rejected(name, reduction):
    spec, options, inputs, _ = _case(name)
    loss = mlo.get(name, reduction=reduction, **options)
    shape = tuple(np.shape(loss(**inputs)))
    grads = loss.vjp(np.ones(shape), **inputs)  # the right shape works
    assert sorted(grads) == sorted(spec.differentiable)
    for wrong in _wrong_cotangent_shapes(shape):
        with pytest.raises(ValueError) as err:
            loss.vjp(np.ones(wrong), **inputs)
        assert "`cotangent`" in str(err.value) and str(wrong) in str(err.value), str(err.value)
