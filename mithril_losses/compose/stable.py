"""Artifex's stable ``safe_log`` and ``safe_divide``, on the arrays of any installed library.

These are helpers for writing a loss, not losses (they have no gradient of
their own; inside a loss's value function the vjp is written by hand as
usual). They are not the engine's internal ``_numerics.safe_divide``, which
maps x/0 to 0 instead.
"""

from __future__ import annotations

import numpy as np

from .. import _validation, backends


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _namespace_and_arrays(**named):
    """The arguments (Python numbers kept; lists, or numbers alone, as NumPy arrays) and their library's namespace;
    arrays of two libraries are an error."""
    if all(_is_number(x) for x in named.values()):
        named = {k: np.asarray(x, dtype=np.float64) for k, x in named.items()}
    arrays = {k: x if _is_number(x) or backends.library_of(x) is not None else np.asarray(x) for k, x in named.items()}
    found = None
    for label, x in arrays.items():
        library = None if _is_number(x) else backends.library_of(x)
        if library is None:
            continue
        if found is None:
            found = (label, library)
        elif library != found[1]:
            raise _validation.mixed_libraries(found, (label, library))
    xp = backends.get_adapter(found[1]).xp
    for label, x in arrays.items():
        if not _is_number(x):
            _validation.check_floating(label, x, xp)
    return xp, arrays


def safe_log(x, *, eps: float = 1e-8):
    """``log(max(x, eps))``: the logarithm with its argument clipped from below at ``eps``.

    Artifex's ``safe_log`` (whose docstring says ``log(x + eps)``; its code
    clips, and so does this). ``x`` is a floating array of any library, or a
    Python number or list (computed with NumPy).
    """
    _validation.check_number("eps", eps, low=0.0, low_open=True)
    xp, arrays = _namespace_and_arrays(x=x)
    return xp.log(xp.clip(arrays["x"], min=eps))


def safe_divide(numerator, denominator, *, eps: float = 1e-8):
    """``numerator / (denominator + eps)``, as Artifex's ``safe_divide``.

    ``eps`` only moves a zero denominator away from 0; a denominator of about
    ``-eps`` still divides by (almost) zero. Both arguments are floating arrays
    of one library or Python numbers.
    """
    _validation.check_number("eps", eps, low=0.0, low_open=True)
    xp, arrays = _namespace_and_arrays(numerator=numerator, denominator=denominator)
    return arrays["numerator"] / (arrays["denominator"] + eps)
