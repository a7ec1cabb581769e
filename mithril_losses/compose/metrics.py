"""Exponential moving averages of named loss values, for logging."""

from __future__ import annotations

from collections.abc import Mapping

from .. import _validation


class LossMetrics:
    """Smoothed loss values: an exponential moving average per name, as Artifex's ``LossMetrics``.

    After ``n`` updates with values ``v_1 .. v_n`` a name's value is

        sum_k decay^(n-k) (1 - decay) v_k / (1 - decay^n)

    the moving average started at 0 (Artifex's) divided by ``1 - decay^n``, so
    it is the weighted mean of the values seen so far and the first update
    gives the value itself, instead of ``(1 - decay) v_1`` (the bias
    correction of Adam). ``decay=0`` keeps the last value. Each name counts its
    own updates. Values are Python numbers or 0-d arrays of any library, read
    as floats; NaN and infinities are kept (they show a diverging loss).
    """

    def __init__(self, *, decay: float = 0.99):
        _validation.check_number("decay", decay, low=0.0, high=1.0, high_open=True)
        self.decay = float(decay)
        self._averages: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def update(self, values: Mapping) -> dict:
        """Add one value per name (a dict name -> number or 0-d array); returns the smoothed values."""
        if not isinstance(values, Mapping):
            raise _validation.bad_metric_values(values)
        numbers = {name: _validation.metric_number(name, v) for name, v in values.items()}
        for name, v in numbers.items():
            self._averages[name] = self.decay * self._averages.get(name, 0.0) + (1.0 - self.decay) * v
            self._counts[name] = self._counts.get(name, 0) + 1
        return self.values

    @property
    def values(self) -> dict:
        """Name -> smoothed value."""
        return {n: a / (1.0 - self.decay ** self._counts[n]) for n, a in self._averages.items()}

    @property
    def counts(self) -> dict:
        """Name -> number of updates."""
        return dict(self._counts)

    def reset(self) -> None:
        """Forget every value."""
        self._averages.clear()
        self._counts.clear()
