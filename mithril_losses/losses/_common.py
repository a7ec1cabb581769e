"""Helpers shared by the loss families: option checks, input domains and input samplers."""

from __future__ import annotations

import numpy as np

from .. import _validation


# The domain (LossSpec.domains) of a target that holds class indices when integer (C classes on the input's class
# axis) and per-class values, not checked, when floating.
CLASS_INDICES = (("[0, C)", {"dtype": "integral"}),)
# The domain of an input that holds probabilities unless the option from_logits is True.
PROBABILITY_INPUT = (("[0, 1]", {"from_logits": False}),)


def number(**bounds):
    """An option check: a real number inside ``bounds`` (see ``_validation.check_number``)."""
    def check(name, value):
        _validation.check_number(name, value, **bounds)
        return float(value)
    return check


def number_or_numbers(**bounds):
    """An option check: one number, or a non-empty sequence of them (returned as a tuple)."""
    def check(name, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _validation.check_number(name, value, **bounds)
            return float(value)
        return _validation.check_numbers(name, value, **bounds)
    return check


def integer(**bounds):
    def check(name, value):
        _validation.check_number(name, value, integer=True, **bounds)
        return int(value)
    return check


def axis_option(*, allow_none):
    """An option check: an axis or a tuple of axes, or None where ``allow_none`` (see
    ``_validation.check_axis_option``)."""
    def check(name, value):
        return _validation.check_axis_option(name, value, allow_none=allow_none)
    return check


def away_from(rng, values, kinks, gap, low, high):
    """Redraw entries of ``values`` closer than ``gap`` to any kink."""
    for _ in range(100):
        near = np.zeros(values.shape, dtype=bool)
        for k in kinks:
            near |= np.abs(values - k) < gap
        if not near.any():
            return values
        values = np.where(near, rng.uniform(low, high, values.shape), values)
    raise RuntimeError("could not draw values away from the kinks")


def residual_sampler(*, kinks=lambda options: (0.0,), target=(-2.0, 2.0), residual=(-3.0, 3.0),
                     gap=0.05, target_kinks=()):
    """Sampler for elementwise (input, target) losses: ``input = target + r``, ``r`` away from kinks."""
    def sample(rng, shape, options):
        t = away_from(rng, rng.uniform(*target, shape), target_kinks, gap, *target)
        r = away_from(rng, rng.uniform(*residual, shape), kinks(options), gap, *residual)
        return {"input": t + r, "target": t}
    return sample
