"""Every input check and every error message of mithril_losses.

Checks run before any arithmetic. Each message names the argument and shows
what was received. Checks that need concrete values (label ranges, value
domains) are skipped while a compiler traces (``concrete=False``).
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterable, Sequence

from array_api_compat import is_jax_namespace


def _shape(x) -> tuple:
    return tuple(int(d) if d is not None else None for d in x.shape)


_KINDS: dict = {}  # (namespace, dtype, kind) -> whether dtype is of kind; some namespaces' isdtype is slow


def _isdtype(xp, dtype, kind) -> bool:
    """``xp.isdtype(dtype, kind)``, remembered per namespace, dtype and kind.

    Keyed by the namespace's name: torch.compile cannot trace a dict keyed by a module.
    """
    key = (xp.__name__, dtype, kind)
    answer = _KINDS.get(key)
    if answer is None:
        answer = _KINDS[key] = xp.isdtype(dtype, kind)
    return answer


# --------------------------------------------------------------------------
# names, options and configuration


def unknown_name(kind: str, name: str, known: Iterable[str]) -> KeyError:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.5)
    hint = f" Closest: {', '.join(close)}." if close else ""
    return KeyError(f"Unknown {kind} {name!r}.{hint} Available: {', '.join(known)}.")


def from_source(error: KeyError, source: str) -> KeyError:
    """The same unknown-name error, saying where the name came from (an environment variable)."""
    return KeyError(f"{error.args[0]} (It was set by {source}.)")


def check_option_names(loss: str, given: Iterable[str], allowed: Sequence[str]) -> None:
    for name in given:
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise TypeError(
                f"{loss!r} got an unknown option `{name}`.{hint} "
                f"Its options are: {', '.join(allowed)}."
            )


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}."
        )


def check_number(name: str, value, *, low=None, high=None, low_open=False,
                 high_open=False, integer=False, allow_none=False) -> None:
    """A real (or integer) option inside [low, high] (open ends as told)."""
    if value is None and allow_none:
        return
    kind = "an integer" if integer else "a real number"
    if isinstance(value, bool) or not isinstance(value, (int, float) if not integer else int):
        raise TypeError(f"`{name}` must be {kind}; got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite; got {value!r}.")
    lo_bad = low is not None and (value <= low if low_open else value < low)
    hi_bad = high is not None and (value >= high if high_open else value > high)
    if lo_bad or hi_bad:
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"`{name}` must lie in {interval}; got {value!r}.")


def check_numbers(name: str, values, **bounds) -> tuple:
    """A non-empty sequence of numbers, each checked like `check_number`."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"`{name}` must be a number or a non-empty sequence of numbers; got {values!r}.")
    for v in values:
        check_number(name, v, **bounds)
    return tuple(float(v) for v in values)


def check_axis(name: str, axis, ndim: int) -> tuple | None:
    """Normalise an int / tuple of ints axis against `ndim`."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else axis
    if not isinstance(axes, (tuple, list)) or not all(
        isinstance(a, int) and not isinstance(a, bool) for a in axes
    ):
        raise TypeError(f"`{name}` must be an int, a tuple of ints or None; got {axis!r}.")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"`{name}` {axis!r} is out of range for an array of {ndim} dimensions.")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` has repeated axes: {axis!r}.")
    return tuple(sorted(out))


def bad_config(source: str, problem: str) -> ValueError:
    return ValueError(f"Invalid mithril_losses configuration in {source}: {problem}")


def bad_loss_config(cfg) -> ValueError:
    return ValueError(
        f"A loss config must be a dict with a string 'name' and option values; got {cfg!r}."
    )


def backend_missing(name: str, extra: str, error: Exception) -> ImportError:
    return ImportError(
        f"The {name!r} backend needs a package that is not installed ({error}). "
        f"Install it with: pip install 'mithril-losses[{extra}]'"
    )


def mixed_libraries(first: tuple[str, str], second: tuple[str, str]) -> TypeError:
    return TypeError(
        f"Inputs come from two array libraries: `{first[0]}` is a {first[1]} array and "
        f"`{second[0]}` is a {second[1]} array. Convert them to one library, or configure a "
        f"backend and pass NumPy arrays."
    )


def wrong_library(arg: str, got: str, backend: str) -> TypeError:
    return TypeError(
        f"`{arg}` is a {got} array but the configured backend is {backend!r}; only NumPy arrays, "
        f"Python scalars and lists are converted. Pass {backend} arrays or change the backend."
    )


def mixed_devices(first: tuple[str, object], second: tuple[str, object]) -> ValueError:
    return ValueError(
        f"Inputs are on different devices: `{first[0]}` on {first[1]} and `{second[0]}` on {second[1]}."
    )


def unsupported_dtype(backend: str, dtype: str, available: Sequence[str]) -> TypeError:
    return TypeError(f"The {backend!r} backend has no dtype {dtype!r}; it has {', '.join(available)}.")


def unknown_device(backend: str, device, available: Sequence[str]) -> ValueError:
    return ValueError(f"The {backend!r} backend sees no device {device!r}; it sees {', '.join(available)}.")


# --------------------------------------------------------------------------
# call arguments


def bind_arguments(loss: str, names: Sequence[str], args: tuple, kwargs: dict,
                   optional: Sequence[str] = ()) -> dict:
    """Map positional and keyword inputs of a call to the loss's input names."""
    if len(args) > len(names):
        raise TypeError(
            f"{loss!r} takes {len(names)} inputs ({', '.join(names)}); got {len(args)} positional arguments."
        )
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise TypeError(f"{loss!r} got an unexpected argument `{key}`; its inputs are {', '.join(names)}.")
        if key in bound:
            raise TypeError(f"{loss!r} got `{key}` twice (positionally and by keyword).")
        bound[key] = value
    missing = [n for n in names if n not in bound and n not in optional]
    if missing:
        raise TypeError(f"{loss!r} is missing the input(s) {', '.join(f'`{m}`' for m in missing)}.")
    return bound


def check_floating(name: str, x, xp) -> None:
    if not _isdtype(xp, x.dtype, "real floating"):
        raise TypeError(f"`{name}` must be a real floating-point array; got dtype {x.dtype}.")


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
    if a.shape != b.shape and _shape(a) != _shape(b):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape; got {_shape(a)} and {_shape(b)}."
        )


def check_shape(name: str, x, expected: tuple, what: str) -> None:
    if _shape(x) != tuple(expected):
        raise ValueError(f"`{name}` must have shape {tuple(expected)} ({what}); got {_shape(x)}.")


def check_ndim(name: str, x, *, at_least: int) -> None:
    if x.ndim < at_least:
        raise ValueError(f"`{name}` must have at least {at_least} dimension(s); got shape {_shape(x)}.")


def check_min_size(name: str, size: int, at_least: int, what: str) -> None:
    if size < at_least:
        raise ValueError(f"`{name}` must have {what} of at least {at_least}; got {size}.")


def check_weight_shape(weight, loss_shape: tuple) -> None:
    """`weight` broadcasts to the loss, or equals its leading dims (per sample)."""
    w = _shape(weight)
    trailing = len(w) <= len(loss_shape) and all(
        a in (1, b) for a, b in zip(reversed(w), reversed(loss_shape))
    )
    leading = w == tuple(loss_shape[: len(w)])
    if not (trailing or leading):
        raise ValueError(
            f"`weight` of shape {w} fits neither the unreduced loss of shape {tuple(loss_shape)} "
            f"(broadcasting) nor its leading dimensions (per-sample weights)."
        )


def check_where(where, xp, loss_shape: tuple) -> None:
    if where.dtype != xp.bool:
        raise TypeError(f"`where` must be a boolean mask; got dtype {where.dtype}.")
    check_weight_shape_like("where", where, loss_shape)


def check_weight_shape_like(name: str, x, loss_shape: tuple) -> None:
    try:
        check_weight_shape(x, loss_shape)
    except ValueError as err:
        raise ValueError(str(err).replace("`weight`", f"`{name}`", 1)) from None


def check_cotangent(cotangent, loss_shape: tuple) -> None:
    if _shape(cotangent) != tuple(loss_shape):
        raise ValueError(
            f"`cotangent` must have the shape of the loss output {tuple(loss_shape)}; got {_shape(cotangent)}."
        )


def _violation(xp, predicate, *arrays, **params):
    """None where no entry fails ``predicate(xp, *arrays, **params)`` (a boolean array, True where an entry
    fails), else (namespace, arrays, that boolean array) to describe the failure with.

    The values are read through NumPy where every array's adapter gives them cheaply (``host_values``: arrays on
    the CPU, small ones on a GPU): microseconds, where the library's own operations cost a dispatch each. A JAX
    array left on its device is checked by one compiled call (its eager operations cost ~100 us each on a GPU).
    """
    from . import backends

    values = []
    for x in arrays:
        library = backends.library_of(x)
        v = None if library is None else backends.get_adapter(library).host_values(x)
        if v is None:
            break
        values.append(v)
    else:
        import array_api_compat.numpy as xp

        arrays = values
    if is_jax_namespace(xp) and not bool(_compiled_any(predicate, tuple(params))(*arrays, **params)):
        return None
    bad = predicate(xp, *arrays, **params)
    return (xp, arrays, bad) if bool(xp.any(bad)) else None


@functools.lru_cache(maxsize=None)
def _compiled_any(predicate, params):
    import jax
    import jax.numpy as jnp

    return jax.jit(lambda *arrays, **kw: jnp.any(predicate(jnp, *arrays, **kw)), static_argnames=params)


def _outside(xp, x, *, low, high, low_open):
    bad = xp.zeros_like(x, dtype=xp.bool)
    if low is not None:
        bad = bad | ((x <= low) if low_open else (x < low))
    if high is not None:
        bad = bad | (x > high)
    return bad


def check_value_range(name: str, x, xp, *, low=None, high=None, low_open=False, what: str) -> None:
    """Concrete-value domain check (call only on concrete arrays)."""
    found = _violation(xp, _outside, x, low=low, high=high, low_open=low_open)
    if found:
        xp, (x,), bad = found
        raise ValueError(f"`{name}` must be {what}; got a value of {_first_where(xp, x, bad)!r}.")


def _not_a_label(xp, labels, *, num_classes, ignore_index, lowest=0):
    valid = (labels >= lowest) & (labels < num_classes)
    if ignore_index is not None:
        valid = valid | (labels == ignore_index)
    return ~valid


def _offending_label(xp, labels, bad, num_classes) -> int:
    """The largest label that fails if it is too large, else the smallest (the one below the range)."""
    zero = xp.zeros_like(labels)
    high = int(xp.max(xp.where(bad, labels, zero)))
    return high if high >= num_classes else int(xp.min(xp.where(bad, labels, zero)))


def check_labels(name: str, labels, xp, num_classes: int, *, ignore_index=None, concrete: bool = True) -> None:
    """Integer class indices in [0, num_classes) (or ``ignore_index``); the range only on concrete arrays."""
    if not _isdtype(xp, labels.dtype, "integral"):
        raise TypeError(f"`{name}` must hold integer class indices; got dtype {labels.dtype}.")
    if not concrete:
        return
    found = _violation(xp, _not_a_label, labels, num_classes=num_classes, ignore_index=ignore_index)
    if found:
        xp, (labels,), bad = found
        allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
        raise ValueError(f"`{name}` must hold class indices in {allowed}; "
                         f"got {_offending_label(xp, labels, bad, num_classes)}.")


def check_reduction(loss: str, reduction, allowed: Sequence[str]) -> None:
    if reduction not in allowed:
        raise ValueError(
            f"`reduction` of {loss!r} must be one of {', '.join(map(repr, allowed))}; got {reduction!r}."
        )


def batchmean_of_scalar(loss: str) -> ValueError:
    return ValueError(f"`reduction` 'batchmean' of {loss!r} needs a batch axis; the unreduced loss is a scalar.")


def not_registered(name: str) -> ValueError:
    return ValueError(f"A loss named {name!r} is already registered; pass replace=True to override it.")


def _first_where(xp, x, bad) -> float:
    """The first entry of ``x`` where ``bad`` holds, without boolean indexing (which MLX lacks)."""
    i = int(xp.argmax(xp.astype(xp.reshape(bad, (-1,)), xp.int8)))
    return float(xp.reshape(x, (-1,))[i])


def check_values_in(name: str, x, xp, allowed: Sequence[float], what: str) -> None:
    """Concrete-value check that every entry of ``x`` is one of ``allowed`` (call only on concrete arrays)."""
    found = _violation(xp, _none_of, x, allowed=tuple(allowed))
    if found:
        xp, (x,), bad = found
        raise ValueError(f"`{name}` must {what}; got a value of {_first_where(xp, x, bad)!r}.")


def _none_of(xp, x, *, allowed):
    bad = xp.ones_like(x, dtype=xp.bool)
    for a in allowed:
        bad = bad & (x != a)
    return bad


def check_broadcasts_to(name: str, x, other: str, shape: tuple) -> None:
    """`x` broadcasts (NumPy rules) to `shape` without enlarging it."""
    s = _shape(x)
    if not (len(s) <= len(shape) and all(a in (1, b) for a, b in zip(reversed(s), reversed(shape)))):
        raise ValueError(
            f"`{name}` of shape {s} must broadcast to the shape of `{other}` {tuple(shape)}."
        )


# --------------------------------------------------------------------------
# classification metrics (brier, spiegelhalter_z, AnyLoss)


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False; got {value!r} ({type(value).__name__}).")


def check_real_or_integral(name: str, x, xp) -> None:
    """Floating, integer or boolean (labels that are cast to the input's dtype)."""
    if not _isdtype(xp, x.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"`{name}` must be a real, integer or boolean array; got dtype {x.dtype}.")


def _first(xp, x, bad):
    """The first entry of ``x`` where ``bad`` holds, without boolean indexing (MLX has none)."""
    flat = xp.reshape(x, (-1,))
    i = int(xp.argmax(xp.astype(xp.reshape(bad, (-1,)), xp.int32)))
    v = flat[i]
    return int(v) if _isdtype(xp, x.dtype, "integral") else float(v)


def check_binary_labels(name: str, x, xp) -> None:
    """Concrete labels that are exactly 0 or 1 (call only on concrete arrays)."""
    if _isdtype(xp, x.dtype, "bool"):
        return
    found = _violation(xp, _none_of, x, allowed=(0, 1))
    if found:
        xp, (x,), bad = found
        raise ValueError(f"`{name}` must hold binary labels 0 or 1; got {_first(xp, x, bad)!r}.")


def check_target_shape(name: str, x, forms: dict) -> None:
    """``x`` has one of the shapes in ``forms`` (shape -> what that shape means)."""
    if _shape(x) not in forms:
        allowed = " or ".join(f"{s} ({what})" for s, what in forms.items())
        raise ValueError(f"`{name}` must have shape {allowed}; got {_shape(x)}.")


def check_unit_interval(name: str, x, xp, what: str) -> None:
    """Concrete values in [0, 1] (call only on concrete arrays); NaN is rejected too."""
    found = _violation(xp, _outside_or_nan, x, low=0, high=1)
    if found:
        xp, (x,), bad = found
        raise ValueError(f"`{name}` must be {what}; got a value of {_first(xp, x, bad)!r}.")


def _outside_or_nan(xp, x, *, low, high, high_open=False):
    return ~((x >= low) & ((x < high) if high_open else (x <= high)))


# --------------------------------------------------------------------------
# classification margin losses (multi_margin, multilabel_margin, categorical_hinge, capsule_margin)


def check_ndim_in(name: str, x, allowed: Sequence[int], what: str) -> None:
    if x.ndim not in allowed:
        raise ValueError(f"`{name}` must have shape {what}; got {_shape(x)}.")


def check_class_targets(name: str, target, input_name: str, x, xp) -> bool:
    """Integer class indices (``x``'s shape without its last axis) or floating per-class values (``x``'s shape).

    Returns True for indices; the index range is left to ``check_labels``.
    """
    if _isdtype(xp, target.dtype, "integral"):
        check_shape(name, target, _shape(x)[:-1], f"integer class indices: the shape of `{input_name}` without its class axis")
        return True
    if not _isdtype(xp, target.dtype, "real floating"):
        raise TypeError(f"`{name}` must hold integer class indices or floating per-class values "
                        f"(one-hot or probabilities); got dtype {target.dtype}.")
    if _shape(target) != _shape(x):
        raise ValueError(f"`{name}` with floating per-class values must have the shape of `{input_name}` "
                         f"{_shape(x)}; got {_shape(target)} (class indices need an integer dtype).")
    return False


def check_label_lists(name: str, labels, xp, num_classes: int, *, concrete: bool = True) -> None:
    """Rows of integer class indices in [0, num_classes) where -1 ends a row's list (the range only when concrete)."""
    if not _isdtype(xp, labels.dtype, "integral"):
        raise TypeError(f"`{name}` must hold integer class indices; got dtype {labels.dtype}.")
    if not concrete:
        return
    found = _violation(xp, _not_a_label, labels, num_classes=num_classes, ignore_index=None, lowest=-1)
    if found:
        xp, (labels,), bad = found
        raise ValueError(f"`{name}` must hold class indices in [0, {num_classes}), or -1 to end a row's "
                         f"labels; got {_offending_label(xp, labels, bad, num_classes)}.")


def check_option_order(low_name: str, low, high_name: str, high) -> None:
    if not low < high:
        raise ValueError(f"`{low_name}` must be less than `{high_name}`; got {low_name}={low!r} and {high_name}={high!r}.")


# --------------------------------------------------------------------------
# softmax classification (cross_entropy, nll, poly1, categorical_focal)


def check_class_target_dtype(name: str, x, xp, *, probabilities: bool) -> None:
    """Integer class indices (or, where ``probabilities``, floating class probabilities)."""
    if _isdtype(xp, x.dtype, "integral") or (probabilities and _isdtype(xp, x.dtype, "real floating")):
        return
    what = "integer class indices or floating class probabilities" if probabilities else "integer class indices"
    raise TypeError(f"`{name}` must hold {what}; got dtype {x.dtype}.")


def ignore_index_with_probabilities(ignore_index) -> ValueError:
    return ValueError(
        f"`ignore_index` applies to class-index targets only; got ignore_index={ignore_index!r} with a floating "
        f"(class-probability) `target`. Pass integer class indices, or leave ignore_index at -100."
    )


def check_option_length(name: str, values: Sequence, expected: int, what: str) -> None:
    if len(values) != expected:
        raise ValueError(f"`{name}` must have {expected} entries ({what}); got {len(values)}: {tuple(values)!r}.")


# --------------------------------------------------------------------------
# probabilistic distances (wasserstein_distance, maximum_mean_discrepancy, energy_distance)


def check_equal_sample_counts(name_a: str, a, name_b: str, b, axis) -> None:
    """Two sample arrays of one shape: equally many samples along ``axis`` and the same other dimensions."""
    if _shape(a) != _shape(b):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape: equally many samples along axis={axis!r} "
            f"(unequal sample counts are not supported) and the same other dimensions; got {_shape(a)} and {_shape(b)}."
        )


def check_sample_sets(name_a: str, a, name_b: str, b) -> None:
    """Sample sets (..., n, d) and (..., m, d): the same leading dimensions and feature size; n and m may differ."""
    sa, sb = _shape(a), _shape(b)
    if sa[:-2] != sb[:-2] or sa[-1] != sb[-1]:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must be sample sets of shapes (..., n, d) and (..., m, d) with the same "
            f"leading dimensions (...) and feature size d; got {sa} and {sb}."
        )


# --------------------------------------------------------------------------
# probabilistic divergences and likelihoods (gaussian_nll)


def bad_variance_shape(name: str, var, input_name: str, x) -> ValueError:
    """A variance whose shape fits none of PyTorch's gaussian_nll_loss forms."""
    s = _shape(x)
    return ValueError(
        f"`{name}` of shape {_shape(var)} does not fit `{input_name}` of shape {s}: it must have the input's shape "
        f"{s}, the input's shape without its last dimension {s[:-1]}, the input's shape with exactly one "
        f"dimension of size 1, or be a scalar."
    )


# --------------------------------------------------------------------------
# embedding pairs (triplet_margin_with_distance's registered distances)


def check_distance_registration(name, value, vjp) -> None:
    """`register_distance`'s arguments: a non-empty string name and two callables."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"A distance's `name` must be a non-empty string; got {name!r} ({type(name).__name__}).")
    for arg, f in (("value", value), ("vjp", vjp)):
        if not callable(f):
            raise TypeError(f"The `{arg}` of distance {name!r} must be callable; got {f!r} ({type(f).__name__}).")


def distance_taken(name: str, builtin: bool) -> ValueError:
    if builtin:
        return ValueError(f"{name!r} is a built-in distance and cannot be replaced; register yours under another name.")
    return ValueError(f"A distance named {name!r} is already registered; pass replace=True to override it.")


def check_sign_targets(name: str, x, xp, concrete: bool) -> None:
    """Real or integer targets holding -1 or 1 (the values only on concrete arrays)."""
    if not _isdtype(xp, x.dtype, ("real floating", "integral")):
        raise TypeError(f"`{name}` must be a real or integer array of -1 and 1; got dtype {x.dtype}.")
    found = _violation(xp, _none_of, x, allowed=(-1, 1)) if concrete else None
    if found:
        xp, (x,), bad = found
        raise ValueError(f"`{name}` must hold -1 or 1; got {_first(xp, x, bad)!r}.")


# --------------------------------------------------------------------------
# embedding ranking (ranking_softmax's item mask)


def check_bool_array(name: str, x, xp) -> None:
    if not _isdtype(xp, x.dtype, "bool"):
        raise TypeError(f"`{name}` must be a boolean array; got dtype {x.dtype}.")


# --------------------------------------------------------------------------
# detection (box losses, distribution focal)


def check_boxes(name: str, boxes, xp, concrete: bool) -> None:
    """Boxes ``(..., 4)`` as (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2 (the order only on concrete arrays)."""
    if boxes.ndim < 1 or _shape(boxes)[-1] != 4:
        raise ValueError(f"`{name}` must have shape (..., 4) with boxes as (x1, y1, x2, y2); got {_shape(boxes)}.")
    if not concrete:
        return
    found = _violation(xp, _misordered, xp.reshape(boxes, (-1, 4)))
    if found:
        xp, (flat,), bad = found
        i = int(xp.argmax(xp.astype(bad, xp.int32)))
        box = tuple(float(v) for v in flat[i, :])
        raise ValueError(f"`{name}` must hold boxes (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2; "
                         f"got box {box} at flat index {i}.")


def _misordered(xp, flat):
    return ~((flat[:, 2] >= flat[:, 0]) & (flat[:, 3] >= flat[:, 1]))  # NaN is rejected too


def check_bin_targets(name: str, x, xp, n_bins: int) -> None:
    """Concrete continuous bin positions in [0, n_bins - 1) (call only on concrete arrays); NaN is rejected too."""
    found = _violation(xp, _outside_or_nan, x, low=0, high=n_bins - 1, high_open=True)
    if found:
        xp, (x,), bad = found
        raise ValueError(f"`{name}` must hold bin positions in [0, {n_bins - 1}) for {n_bins} bins; "
                         f"got {_first(xp, x, bad)!r}.")


# --------------------------------------------------------------------------
# sequences (ctc)


def check_integer_array(name: str, x, xp, what: str) -> None:
    if not _isdtype(xp, x.dtype, "integral"):
        raise TypeError(f"`{name}` must be an integer array ({what}); got dtype {x.dtype}.")


def check_integers_in(name: str, x, xp, low: int, high: int, what: str, *, where=None) -> None:
    """Concrete integers in [low, high] (only where ``where`` holds); call only on concrete arrays."""
    found = _violation(xp, _outside_where, x, *(() if where is None else (where,)), low=low, high=high)
    if found:
        xp, (x, *_), bad = found
        raise ValueError(f"`{name}` must be {what}; got {_first(xp, x, bad)!r}.")


def _outside_where(xp, x, *where, low, high):
    bad = (x < low) | (x > high)
    return bad & where[0] if where else bad


def ctc_targets_shape(targets, batch: int) -> ValueError:
    return ValueError(
        f"`targets` must be padded (N, S) with N = {batch} (the batch axis 1 of `log_probs`) or concatenated "
        f"1-D (sum of `target_lengths`); got {_shape(targets)}."
    )


def ctc_concatenated_length(total: int, length_sum: int) -> ValueError:
    return ValueError(
        f"Concatenated `targets` must hold sum(`target_lengths`) = {length_sum} labels; got {total}."
    )


def ctc_blank_out_of_range(blank: int, classes: int) -> ValueError:
    return ValueError(f"`blank` must be a class index in [0, {classes}) (the class axis of `log_probs`); got {blank}.")


def ctc_target_is_blank(blank: int) -> ValueError:
    return ValueError(f"`targets` must not contain the blank index {blank} within a target's length; got {blank}.")


# --------------------------------------------------------------------------
# perceptual losses (features per layer: one array, a list or a dict of arrays)


def check_layer_weights(name: str, weights):
    """None, a dict layer name -> weight or a sequence of weights, each >= 0, not all 0; returned as a dict or tuple."""
    if weights is None:
        return None
    if isinstance(weights, dict):
        for key, value in weights.items():
            check_number(f"{name}[{key!r}]", value, low=0.0)
        values = tuple(weights.values())
    elif isinstance(weights, (list, tuple)):
        for i, value in enumerate(weights):
            check_number(f"{name}[{i}]", value, low=0.0)
        values = tuple(weights)
    else:
        raise TypeError(f"`{name}` must be None, a dict of layer weights or a list of them; got {weights!r}.")
    if not any(v > 0 for v in values):
        raise ValueError(f"`{name}` must give at least one layer a positive weight; got {weights!r}.")
    return {k: float(v) for k, v in weights.items()} if isinstance(weights, dict) else tuple(float(v) for v in values)


def _layer_kind(layers) -> str:
    return "a dict" if isinstance(layers, dict) else "a list" if isinstance(layers, (list, tuple)) else "one array"


def check_same_layers(name_a: str, a, name_b: str, b) -> None:
    """Both inputs have the same structure and layer names (dict keys or list length)."""
    kind_a, kind_b = _layer_kind(a), _layer_kind(b)
    if kind_a != kind_b:
        raise TypeError(f"`{name_a}` and `{name_b}` must both be one array, a list or a dict of layers; "
                        f"got {kind_a} and {kind_b}.")
    keys_a = list(a) if isinstance(a, dict) else len(a) if kind_a == "a list" else None
    keys_b = list(b) if isinstance(b, dict) else len(b) if kind_b == "a list" else None
    if keys_a != keys_b:
        what = "layer names" if isinstance(a, dict) else "number of layers"
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same {what}; got {keys_a!r} and {keys_b!r}.")
    if keys_a is not None and not keys_a:
        raise ValueError(f"`{name_a}` must hold at least one layer; got an empty {kind_a[2:]}.")


def check_layer_weights_match(name: str, weights, layers_name: str, layers) -> None:
    """Dict weights name existing layers of dict features; list weights have one entry per layer of list features."""
    if weights is None:
        return
    kind = _layer_kind(layers)
    if isinstance(weights, dict):
        if kind != "a dict":
            raise TypeError(f"`{name}` is a dict, so `{layers_name}` must be a dict of layers; got {kind}.")
        unknown = [k for k in weights if k not in layers]
        if unknown:
            raise ValueError(f"`{name}` names layers {unknown!r} that `{layers_name}` does not have; "
                             f"its layers are {list(layers)!r}.")
    elif kind != "a list" or len(weights) != len(layers):
        got = f"{len(layers)} layers" if kind == "a list" else kind
        raise ValueError(f"`{name}` has {len(weights)} entries, so `{layers_name}` must be a list of "
                         f"{len(weights)} layers; got {got}.")


def check_batch_size(name: str, x, batch: int, first: str) -> None:
    if x.ndim < 1 or x.shape[0] != batch:
        raise ValueError(f"`{name}` must have the batch size {batch} of `{first}` on axis 0; got shape {_shape(x)}.")


def check_channel_axis(name: str, axis: int, x) -> int:
    """A non-batch axis of ``x`` (negative counts from the end), returned as a non-negative index."""
    if not -x.ndim < axis < x.ndim or axis % x.ndim == 0:
        raise ValueError(f"`channel_axis` {axis} is not a non-batch axis of `{name}` with shape {_shape(x)} "
                         f"(axis 0 is the batch).")
    return axis % x.ndim


def check_same_channels(name_a: str, a, axis_a: int, name_b: str, b, axis_b: int) -> None:
    if a.shape[axis_a] != b.shape[axis_b]:
        raise ValueError(f"`{name_a}` and `{name_b}` must have the same number of channels; got {a.shape[axis_a]} "
                         f"(shape {_shape(a)}) and {b.shape[axis_b]} (shape {_shape(b)}).")


def no_gradient_for(loss: str, label: str, differentiable: Sequence[str], stop: str) -> ValueError:
    """A framework asks for the gradient of an input the loss gives none (a target, a label, the engine's weight)."""
    return ValueError(f"`{label}` is being differentiated, but {loss!r} gives it no gradient (it gives gradients for "
                      f"{', '.join(f'`{n}`' for n in differentiable)}). Pass `{stop}` instead.")


# --------------------------------------------------------------------------
# the Mithril integration (mithril_losses.integrations.mithril)


def not_a_compiled_mithril_model(model) -> TypeError:
    return TypeError(
        f"Expected a compiled Mithril model (from mithril.compile(...)); got {type(model).__name__}, which has "
        f"neither evaluate(params, data, output_gradients=...) (newer Mithril) nor evaluate(params, data) with "
        f"evaluate_gradients(params, data, output_gradients=...) (mithril 0.1.1)."
    )


def not_a_mapping(name: str, value, what: str) -> TypeError:
    return TypeError(f"`{name}` must be a dict of {what}; got {type(value).__name__}.")


def empty_mapping(name: str, what: str) -> ValueError:
    return ValueError(f"`{name}` is empty; it must map at least one {what}.")


def output_gradient_not_an_array(output: str, value) -> TypeError:
    return TypeError(
        f"`output_gradients[{output!r}]` must be an array (NumPy, JAX, PyTorch or MLX); got {type(value).__name__}."
    )


def output_gradient_shape(output: str, got: tuple, expected: tuple) -> ValueError:
    return ValueError(
        f"`output_gradients[{output!r}]` must have the shape of the model output {output!r}, {expected}; got {got}. "
        f"(Mithril would broadcast it without an error and return wrong parameter gradients.)"
    )


def missing_outputs(missing: Sequence[str], available: Sequence[str]) -> KeyError:
    return KeyError(
        f"`outputs` has no output {', '.join(map(repr, missing))}; it has {', '.join(map(repr, available))}. "
        f"Pass the model's evaluated outputs, model.evaluate(params, data)."
    )


def bad_mithril_loss_entry(output: str, entry) -> TypeError:
    return TypeError(
        f"`losses[{output!r}]` must be (loss, targets) or (loss, targets, weight), with a Loss from "
        f"mithril_losses.get(...) and targets a key of `data`, a tuple of keys or None; got {entry!r}."
    )


def unreduced_mithril_loss(output: str, loss: str) -> ValueError:
    return ValueError(
        f"`losses[{output!r}]`: {loss!r} has reduction='none', but a training objective is a scalar; "
        f"use reduction='mean' or 'sum'."
    )


def prediction_not_differentiable(output: str, loss: str, first: str) -> ValueError:
    return ValueError(
        f"`losses[{output!r}]`: {loss!r} gives no gradient for its first input `{first}`, which is where the "
        f"model output goes."
    )


def missing_target(output: str, key: str, available: Sequence[str]) -> KeyError:
    return KeyError(
        f"`losses[{output!r}]` reads {key!r} from `data`, which has no such key; it has "
        f"{', '.join(map(repr, available)) or 'no keys'}."
    )


# --------------------------------------------------------------------------
# composition (weighted, scheduled, composite, multi-output and uncertainty-weighted objectives,
# regularisation, schedules, metrics, objective configs and files)


def not_a_term(where: str, value) -> TypeError:
    return TypeError(
        f"{where} must be a loss (mlo.get(...)) or an objective (WeightedLoss, CompositeLoss, ...); got {value!r} "
        f"({type(value).__name__}). A plain function has no hand-derived gradient: register it as a loss with "
        f"mlo.register(LossSpec(...)) first."
    )


def objective_not_nestable(where: str, kind: str) -> TypeError:
    return TypeError(f"{where} cannot be a {kind}: it is a whole objective, called with dicts of outputs and targets.")


def check_part_name(owner: str, name) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"Names in {owner!r} must be non-empty strings; got {name!r} ({type(name).__name__}).")
    return name


def bad_parts(owner: str, parts) -> TypeError:
    return TypeError(
        f"The parts of {owner!r} must be a dict name -> loss (or (loss, weight)), or a list of losses named by their "
        f"`name`; got {parts!r} ({type(parts).__name__})."
    )


def bad_part(owner: str, name, part) -> TypeError:
    where = "A part" if name is None else f"Part {name!r}"
    return TypeError(
        f"{where} of {owner!r} must be a loss, an objective or a pair (loss, weight); got {part!r} "
        f"({type(part).__name__})."
    )


def duplicate_part(owner: str, name: str) -> ValueError:
    return ValueError(f"{owner!r} has two parts named {name!r}; give them distinct names (a dict name -> loss, "
                      f"or name=...).")


def no_parts(owner: str) -> ValueError:
    return ValueError(f"{owner!r} has no parts; give it at least one loss.")


def check_renaming(owner: str, renamed, inputs: Sequence[str]) -> dict:
    """``inputs=`` of a weighted part: a dict from some of the loss's input names to new, distinct names."""
    if renamed is None:
        return {}
    if not isinstance(renamed, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                for k, v in renamed.items()):
        raise TypeError(f"`inputs` of {owner!r} must be a dict from the loss's input names to new names (strings); "
                        f"got {renamed!r}.")
    unknown = [k for k in renamed if k not in inputs]
    if unknown:
        raise ValueError(f"`inputs` of {owner!r} renames {unknown!r}, which the loss does not take; its inputs are "
                         f"{', '.join(inputs)} (`weight` is the call keyword and keeps its name).")
    names = [renamed.get(n, n) for n in inputs]
    clashing = sorted({n for n in names if names.count(n) > 1 or n == "weight"})
    if clashing:
        raise ValueError(f"`inputs` of {owner!r} gives the input names {names!r}, where {clashing!r} would name two "
                         f"inputs or the call keyword `weight`; choose distinct names.")
    return dict(renamed)


def too_many_positional(owner: str, count: int, positional: Sequence[str], conflict) -> TypeError:
    if conflict is None:
        return TypeError(f"{owner!r} takes at most {len(positional)} positional inputs ({', '.join(positional)}); "
                         f"got {count}. Pass the others by name.")
    bound = f"only ({', '.join(positional)})" if positional else "none"
    return TypeError(f"{owner!r} got {count} positional inputs, but positions bind {bound}: {conflict}. "
                     f"Pass the inputs by name.")


def unknown_parts(owner: str, arg: str, unknown: Sequence, names: Iterable[str]) -> ValueError:
    return ValueError(f"`{arg}` of {owner!r} is a dict naming {list(unknown)!r}, which are not its parts; its parts "
                      f"are {list(names)!r}.")


def ambiguous_weight(owner: str, meanings: dict) -> ValueError:
    described = ", ".join(f"{n!r}: {m} weights" for n, m in meanings.items())
    return ValueError(
        f"`weight` of {owner!r} is one array, but it means different things to its parts ({described}); pass a dict "
        f"part name -> weight instead."
    )


def part_shapes(owner: str, shapes: dict) -> ValueError:
    described = ", ".join(f"{n!r}: {s}" for n, s in shapes.items())
    return ValueError(f"The parts of {owner!r} give values of different shapes ({described}), which do not add up; "
                      f"give them one reduction (e.g. 'mean').")


def scheduled_weight(owner: str, name: str) -> TypeError:
    return TypeError(f"Part {name!r} of {owner!r} is a ScheduledLoss: its weight comes from its schedule; "
                     f"set its step instead.")


def schedule_not_callable(schedule) -> TypeError:
    return TypeError(f"`schedule` must be a LossScheduler or a callable step -> weight; got {schedule!r} "
                     f"({type(schedule).__name__}).")


def schedule_not_serialisable(name: str, schedule) -> TypeError:
    return TypeError(
        f"ScheduledLoss {name!r} has the Python callable {schedule!r} as its schedule, which has no config (code is "
        f"never written to or read from a config). Use a LossScheduler (constant, linear_warmup, cosine_annealing, "
        f"warmup_cosine, exponential_decay) to save it."
    )


def check_schedule_value(name: str, step: int, value) -> float:
    """A schedule's weight: a finite real number (a Python or NumPy number, or a 0-d array)."""
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise ValueError(f"The schedule of {name!r} gave {value!r} at step {step}; a weight must be a finite real "
                         f"number.")
    return number


def check_step(step) -> int:
    """A training step: a non-negative integer (Python or NumPy)."""
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"`step` must be a non-negative integer; got {step!r} ({type(step).__name__}).")
    if step < 0:
        raise ValueError(f"`step` must be a non-negative integer; got {step!r}.")
    return step.__index__()


def bad_schedule_config(config) -> ValueError:
    return ValueError(f"A schedule config must be a dict with a string 'kind' and its parameters; got {config!r}.")


def missing_parameters(what: str, missing: Sequence[str]) -> TypeError:
    return TypeError(f"The {what} is missing the parameter(s) {', '.join(f'`{m}`' for m in missing)}.")


def reserved_input(owner: str, task: str, name: str) -> ValueError:
    return ValueError(f"Task {task!r} of {owner!r} takes an input named `{name}`, which holds the learned "
                      f"log-variances there; rename it with WeightedLoss(..., inputs={{{name!r}: ...}}).")


def vjp_unsupported(owner: str, reason: str) -> TypeError:
    return TypeError(f"{owner!r} has no vjp: {reason}.")


def check_log_vars_shape(owner: str, shape: tuple, tasks: Sequence[str]) -> None:
    if tuple(shape) != (len(tasks),):
        raise ValueError(f"`log_vars` of {owner!r} must have shape ({len(tasks)},): one log-variance per task "
                         f"({', '.join(tasks)}); got {tuple(shape)}.")


def task_not_scalar(owner: str, task: str, shape: tuple) -> ValueError:
    return ValueError(f"Task {task!r} of {owner!r} gives a loss of shape {shape}; uncertainty weighting needs each "
                      f"task reduced to a scalar (reduction 'mean' or 'sum').")


def no_prediction(owner: str, output: str) -> ValueError:
    return ValueError(f"The loss of output {output!r} of {owner!r} has no prediction input to receive the output.")


def check_outputs(owner: str, outputs, names: Sequence[str]) -> None:
    if not isinstance(outputs, dict):
        raise TypeError(f"`outputs` of {owner!r} must be a dict output name -> array; got {type(outputs).__name__}.")
    missing = [n for n in names if n not in outputs]
    extra = [n for n in outputs if n not in names]
    if missing or extra:
        raise ValueError(f"`outputs` of {owner!r} must hold exactly its outputs {list(names)!r}; missing "
                         f"{missing!r}, not its outputs {extra!r}.")


def bad_targets(owner: str, targets) -> TypeError:
    return TypeError(f"`targets` of {owner!r} must be a dict output name -> target (or a dict of the loss's other "
                     f"inputs); got {type(targets).__name__}.")


def targets_need_names(owner: str, output: str, others: Sequence[str]) -> ValueError:
    if not others:
        return ValueError(f"`targets[{output!r}]` of {owner!r} is given, but the loss of that output takes no input "
                          f"besides the output.")
    return ValueError(f"`targets[{output!r}]` of {owner!r} must be a dict naming the loss's inputs "
                      f"{', '.join(others)}, as it takes more than one besides the output.")


def missing_targets(owner: str, output: str, missing: Sequence[str]) -> TypeError:
    return TypeError(f"`targets[{output!r}]` of {owner!r} is missing the input(s) "
                     f"{', '.join(f'`{m}`' for m in missing)} of that output's loss.")


def empty_params(params) -> ValueError:
    return ValueError(f"`params` must hold at least one parameter array; got {params!r}.")


def bad_metric_values(values) -> TypeError:
    return TypeError(f"LossMetrics.update takes a dict name -> loss value; got {type(values).__name__}.")


def metric_number(name, value) -> float:
    """A loss value as a float: a Python number or an array with one element, of any library."""
    if isinstance(value, bool) or not hasattr(value, "__float__") or tuple(getattr(value, "shape", ())) != ():
        raise TypeError(f"LossMetrics values must be real numbers or 0-d arrays; `{name}` is {value!r}.")
    return float(value)


def bad_objective_config(path: str, problem: str) -> ValueError:
    return ValueError(f"Invalid objective config at {path}: {problem}")


def at_config_path(error: Exception, path: str) -> Exception:
    """The same error, saying where in a nested config it happened."""
    message = error.args[0] if error.args else str(error)
    return type(error)(f"{path}: {message}")


def in_file(error: Exception, source: str) -> Exception:
    """The same error, naming the file it came from."""
    message = error.args[0] if error.args else str(error)
    return type(error)(f"In {source}: {message}")


def check_config_keys(path: str, kind: str, cfg, required: Sequence[str], optional: Sequence[str]) -> None:
    allowed = ("composite", *required, *optional)
    unknown = [k for k in cfg if k not in allowed]
    missing = [k for k in required if k not in cfg]
    if unknown or missing:
        problems = [f"unknown keys {unknown!r}"] if unknown else []
        problems += [f"missing keys {missing!r}"] if missing else []
        raise bad_objective_config(path, f"a {kind!r} config has {' and '.join(problems)}; its keys are "
                                         f"{', '.join(allowed)}.")


def check_file_keys(source: str, data: dict, allowed: Sequence[str], *, required: Sequence[str]) -> None:
    unknown = [k for k in data if k not in allowed]
    missing = [k for k in required if k not in data]
    if unknown:
        raise bad_config(source, f"unknown keys {unknown!r}; allowed: {list(allowed)}.")
    if missing:
        raise bad_config(source, f"missing the key(s) {missing!r}.")


def not_a_table(data) -> str:
    return f"expected an object (a table) with the keys 'objective' and 'backend', got {type(data).__name__}."


def objective_file_type(suffix: str) -> str:
    return f"an objective file must end in .json or .toml; got {suffix or 'no suffix'!r}."


def unreadable(error: Exception) -> str:
    return f"the file cannot be read ({error})."


def not_parsable(fmt: str, error: Exception) -> str:
    return f"not readable as {fmt} ({error})."


def toml_unavailable() -> str:
    return "reading TOML needs Python 3.11+ (tomllib) or the tomli package (pip install tomli)."


# --------------------------------------------------------------------------
# axis options (psnr, cosine_similarity)


def check_axis_option(name: str, axis, *, allow_none: bool):
    """An axis option before the input is seen: an int or a tuple (or list) of distinct ints, or None where
    ``allow_none``; returned as an int, a tuple or None. The range is checked against the input later."""
    if axis is None and not allow_none:
        raise TypeError(f"`{name}` must be an int or a tuple of ints; got None.")
    check_axis(name, axis, 64)
    return tuple(axis) if isinstance(axis, list) else axis


# --------------------------------------------------------------------------
# the backend config file (config.py)


def missing_config_file() -> str:
    return "the file does not exist."


def not_a_json_object(data) -> str:
    return f"expected a JSON object, got {type(data).__name__}."


def setting_not_a_string(key: str, value) -> str:
    return f"`{key}` must be a string, got {value!r} ({type(value).__name__})."


# --------------------------------------------------------------------------
# linear_cross_entropy


def check_in_features(name_x: str, x, name_w: str, w) -> None:
    """``x`` (..., H) and a linear layer's ``w`` (C, H) share the feature size H on their last axes."""
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"`{name_x}` and `{name_w}` must have the same number of features (last axis); got "
                         f"{x.shape[-1]} (shape {_shape(x)}) and {w.shape[-1]} (shape {_shape(w)}).")


def not_a_loss(obj) -> TypeError:
    return TypeError(f"`compile` takes a loss from mithril_losses.get(...); got {obj!r} ({type(obj).__name__}).")


def bad_compile_option(value) -> TypeError:
    return TypeError(f"`compile` must be True, False or a dict of compiler options; got {value!r} "
                     f"({type(value).__name__}).")
