"""NumPy: the embedded default backend, always installed."""

from __future__ import annotations

import numpy as np

from ._base import Adapter


class NumPyAdapter(Adapter):
    name = "numpy"

    def _namespace(self):
        import array_api_compat.numpy as xp

        return xp

    def asarray(self, x, *, dtype=None, device=None):
        self.check_device(device)
        return np.asarray(x, dtype=dtype)

    def host_values(self, x):
        return x


ADAPTER = NumPyAdapter()
