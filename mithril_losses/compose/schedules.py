"""Loss weight schedules: the weight of a ``ScheduledLoss`` as a function of the training step.

Each schedule is one formula of the step ``t`` (a non-negative integer) and a
few numbers, so it round-trips through ``to_config`` as data; no code is ever
stored in or read from a config.
"""

from __future__ import annotations

import inspect
import math

from .. import _validation


def _constant(t, *, weight):
    return weight


def _linear_warmup(t, *, warmup_steps, max_weight):
    return max_weight if t >= warmup_steps else max_weight * t / warmup_steps


def _half_cosine(fraction, min_weight, max_weight):
    """From ``max_weight`` at fraction 0 down to ``min_weight`` at fraction 1 along half a cosine."""
    return min_weight + (max_weight - min_weight) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def _cosine_annealing(t, *, period, min_weight, max_weight):
    return _half_cosine((t % period) / period, min_weight, max_weight)


def _warmup_cosine(t, *, warmup_steps, decay_steps, min_weight, max_weight):
    if t < warmup_steps:
        return _linear_warmup(t, warmup_steps=warmup_steps, max_weight=max_weight)
    return _half_cosine(min(t - warmup_steps, decay_steps) / decay_steps, min_weight, max_weight)


def _exponential_decay(t, *, decay_steps, decay_rate):
    return decay_rate ** (t // decay_steps)


_FORMULAS = {"constant": _constant, "linear_warmup": _linear_warmup, "cosine_annealing": _cosine_annealing,
             "warmup_cosine": _warmup_cosine, "exponential_decay": _exponential_decay}


def _real(name, value):
    _validation.check_number(name, value)
    return float(value)


def _positive(name, value):
    _validation.check_number(name, value, low=0.0, low_open=True)
    return float(value)


def _steps(low):
    def check(name, value):
        _validation.check_number(name, value, low=low, integer=True)
        return int(value)
    return check


_CHECKS = {"weight": _real, "min_weight": _real, "max_weight": _real, "decay_rate": _positive,
           "warmup_steps": _steps(0), "period": _steps(1), "decay_steps": _steps(1)}


def _parameters(fn) -> tuple[str, ...]:
    return tuple(n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY)


class LossScheduler:
    """A loss weight as a function of the training step ``t``; ``schedule(t)`` is the weight.

    Build one with a constructor (the same names as Artifex's ``LossScheduler``
    static methods, which return plain functions there):

    - ``constant(weight=1.0)``: ``weight``;
    - ``linear_warmup(warmup_steps, max_weight=1.0)``: ``max_weight * min(1, t / warmup_steps)``;
    - ``cosine_annealing(period, min_weight=0.0, max_weight=1.0)``:
      ``min + (max - min) * (1 + cos(pi * (t mod period) / period)) / 2``, restarting every
      ``period`` steps (warm restarts, as Artifex);
    - ``warmup_cosine(warmup_steps, decay_steps, min_weight=0.0, max_weight=1.0)``: the linear
      warm-up, then half a cosine from ``max_weight`` down to ``min_weight`` over ``decay_steps``
      steps, then ``min_weight`` (optax's ``warmup_cosine_decay_schedule``);
    - ``exponential_decay(decay_steps, decay_rate=0.9)``: ``decay_rate ** floor(t / decay_steps)``.

    References: Loshchilov and Hutter, SGDR: Stochastic Gradient Descent with
    Warm Restarts (ICLR 2017); Artifex ``LossScheduler``.
    """

    def __init__(self, kind: str, **params):
        """``LossScheduler("linear_warmup", warmup_steps=100, max_weight=1.0)``: every parameter of ``kind``."""
        if kind not in _FORMULAS:
            raise _validation.unknown_name("schedule", kind, _FORMULAS)
        names = _parameters(_FORMULAS[kind])
        _validation.check_option_names(kind, params, names)
        missing = [n for n in names if n not in params]
        if missing:
            raise _validation.missing_parameters(f"schedule {kind!r}", missing)
        self.kind = kind
        self.params = {n: _CHECKS[n](n, params[n]) for n in names}

    def __call__(self, step: int) -> float:
        return float(_FORMULAS[self.kind](_validation.check_step(step), **self.params))

    def to_config(self) -> dict:
        return {"kind": self.kind, **self.params}

    @classmethod
    def from_config(cls, config: dict) -> LossScheduler:
        """Rebuild a schedule from ``to_config()``; only the kinds above and their parameters are accepted
        (parameters left out take the constructor's defaults)."""
        if not isinstance(config, dict) or not isinstance(config.get("kind"), str):
            raise _validation.bad_schedule_config(config)
        kind = config["kind"]
        if kind not in _FORMULAS:
            raise _validation.unknown_name("schedule", kind, _FORMULAS)
        params = {k: v for k, v in config.items() if k != "kind"}
        defaults = {n: p.default for n, p in inspect.signature(getattr(cls, kind)).parameters.items()
                    if p.default is not p.empty}
        return cls(kind, **{**defaults, **params})

    def __eq__(self, other):
        return isinstance(other, LossScheduler) and self.to_config() == other.to_config()

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"LossScheduler.{self.kind}({params})"

    # -- constructors ----------------------------------------------------------
    @classmethod
    def constant(cls, *, weight: float = 1.0) -> LossScheduler:
        return cls("constant", weight=weight)

    @classmethod
    def linear_warmup(cls, *, warmup_steps: int, max_weight: float = 1.0) -> LossScheduler:
        return cls("linear_warmup", warmup_steps=warmup_steps, max_weight=max_weight)

    @classmethod
    def cosine_annealing(cls, *, period: int, min_weight: float = 0.0, max_weight: float = 1.0) -> LossScheduler:
        return cls("cosine_annealing", period=period, min_weight=min_weight, max_weight=max_weight)

    @classmethod
    def warmup_cosine(cls, *, warmup_steps: int, decay_steps: int, min_weight: float = 0.0,
                      max_weight: float = 1.0) -> LossScheduler:
        return cls("warmup_cosine", warmup_steps=warmup_steps, decay_steps=decay_steps, min_weight=min_weight,
                   max_weight=max_weight)

    @classmethod
    def exponential_decay(cls, *, decay_steps: int, decay_rate: float = 0.9) -> LossScheduler:
        return cls("exponential_decay", decay_steps=decay_steps, decay_rate=decay_rate)
