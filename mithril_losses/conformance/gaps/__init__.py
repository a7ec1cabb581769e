"""Known gaps of each backend, one module per backend, each with its reason.

A module defines ``GAPS = {(loss, check, dtype): reason}`` (``"*"`` matches
any loss, check or dtype). A known gap runs as a strict xfail: it is reported
as ``xfail`` while it fails and as a failure once it passes, so it gets removed.
"""

from __future__ import annotations

import importlib


def known_gap(backend: str, loss: str, check: str, dtype: str) -> str | None:
    try:
        gaps = importlib.import_module(f".{backend}", __name__).GAPS
    except ModuleNotFoundError:
        return None
    for (g_loss, g_check, g_dtype), reason in gaps.items():
        if g_loss in ("*", loss) and g_check in ("*", check) and g_dtype in ("*", dtype):
            return reason
    return None
