"""Tolerances per dtype, in one place. A loss may tighten or loosen them in its spec, with a reason.

An error passes when the norm-wise relative error max|a - b| / max(|b|) is at
most ``rtol`` or the absolute error is at most ``atol``.
"""

from __future__ import annotations

TOLERANCES = {
    "float64": (1e-10, 1e-12),
    "float32": (2e-5, 1e-6),
    "float16": (1e-2, 1e-3),
    "bfloat16": (5e-2, 1e-2),
}
# Central differences of 4th order in float64 leave ~1e-9 relative error.
FINITE_DIFFERENCES = (1e-6, 1e-9)


def tolerance(spec, dtype: str) -> tuple[float, float]:
    for t in spec.tolerances:
        if t.dtype == dtype:
            return t.rtol, t.atol
    return TOLERANCES[dtype]
