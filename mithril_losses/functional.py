"""Mithril-style functional names, generated from the registry.

For every loss, ``<name>_loss(*inputs, **options)`` returns the value and
``<name>_loss_gradient(*inputs, **options)`` the gradient with respect to the
prediction input(s): an array for one, a dict for several. Options, ``weight``,
``where`` and ``backend`` are keywords, as for ``get(name, **options)``.
"""

from __future__ import annotations


__all__: list[str] = []

_CALL_KEYWORDS = ("weight", "where", "backend")


def _split(kwargs, spec):
    call = {k: kwargs.pop(k) for k in _CALL_KEYWORDS if k in kwargs}
    inputs = {k: kwargs.pop(k) for k in spec.inputs if k in kwargs}
    return call, inputs, kwargs


def _configured(spec, options):
    from ._loss import Loss

    return Loss(spec, **options)


def expose(spec) -> None:
    """Create (or replace) the functional pair of each of ``spec``'s functional names."""
    for fname in spec.functional_names:
        globals()[fname] = _value_function(spec, fname)
        globals()[f"{fname}_gradient"] = _gradient_function(spec, fname)
        for name in (fname, f"{fname}_gradient"):
            if name not in __all__:
                __all__.append(name)


def _value_function(spec, fname):
    def value(*args, **kwargs):
        call, inputs, options = _split(kwargs, spec)
        return _configured(spec, options).value(*args, **inputs, **call)

    value.__name__ = value.__qualname__ = fname
    value.__doc__ = f"{spec.summary}\n\nValue of the {spec.name!r} loss: {spec.formula}"
    return value


def _gradient_function(spec, fname):
    predictions = spec.prediction_inputs

    def gradient(*args, **kwargs):
        call, inputs, options = _split(kwargs, spec)
        grads = _configured(spec, options).grad(*args, **inputs, **call)
        if len(predictions) == 1:
            return grads[predictions[0]]
        return {k: grads[k] for k in predictions}

    gradient.__name__ = gradient.__qualname__ = f"{fname}_gradient"
    gradient.__doc__ = (f"Gradient of {fname} with respect to {', '.join(predictions)}: {spec.gradient}")
    return gradient


