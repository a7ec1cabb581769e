"""array-api-strict: proves in tests that loss code stays inside the standard."""

from __future__ import annotations

import numpy as np

from ._base import Adapter


class StrictAdapter(Adapter):
    name = "array_api_strict"
    dtypes = ("float32", "float64")

    def _namespace(self):
        import array_api_strict as xp

        return xp

    def asarray(self, x, *, dtype=None, device=None):
        self.check_device(device)
        return self.xp.asarray(np.asarray(x), dtype=dtype)

    def to_numpy(self, x):
        return np.array(np.from_dlpack(x))


ADAPTER = StrictAdapter()
