"""The configured loss object and the call path: bind, convert, validate, compute, reduce."""

from __future__ import annotations

import copy

import numpy as np

from . import _layers, _validation, backends, config
from ._reduction import per_element, reduce


class Loss:
    """A registered loss with fixed options.

    ``loss(*inputs)`` returns the reduced value; ``grad`` a dict input name ->
    gradient; ``value_and_grad`` both in one pass; ``vjp`` the gradients for
    a given cotangent of the loss output. Every call also takes ``weight=``
    (per element or per sample), ``where=`` (boolean mask) and ``backend=``.
    """

    def __init__(self, spec, **options):
        self.spec = spec
        _validation.check_option_names(spec.name, options, spec.option_names)
        reduction = options.pop("reduction", spec.default_reduction)
        _validation.check_reduction(spec.name, reduction, spec.reductions)
        axis = None if "axis" in spec.own_options else options.pop("axis", None)
        if axis is not None:
            _validation.check_axis("axis", axis, 64)
        self.reduction = reduction
        self.axis = axis
        self.options = {o.name: o.normalise(options.get(o.name, o.default)) for o in spec.options}
        if spec.check_options is not None:
            spec.check_options(self.options)
        # what every call asks of the spec, worked out once
        self._floating_inputs = tuple(n for n in spec.inputs if n not in spec.label_inputs)
        self._shape_matched = spec.shape_matched
        self._owns_weight = "weight" in spec.inputs

    # -- description -----------------------------------------------------------
    name = property(lambda self: self.spec.name)
    family = property(lambda self: self.spec.family)
    inputs = property(lambda self: self.spec.inputs)
    differentiable = property(lambda self: self.spec.differentiable)

    def to_config(self) -> dict:
        cfg = {"name": self.name, "reduction": self.reduction}
        if self.axis is not None:
            cfg["axis"] = self.axis
        for key, value in self.options.items():
            cfg[key] = list(value) if isinstance(value, tuple) else value
        return cfg

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "name")
        return f"Loss({self.name!r}, {opts})"

    # -- public calls ----------------------------------------------------------
    def __call__(self, *args, weight=None, where=None, backend=None, **inputs):
        return self.value(*args, weight=weight, where=where, backend=backend, **inputs)

    def value(self, *args, weight=None, where=None, backend=None, **inputs):
        """The reduced loss; inside a framework's autodiff its backward is the hand-derived ``vjp``."""
        call = self._prepare(args, inputs, weight, where, backend)
        if call.adapter.has_autodiff and call.adapter.records_gradients([x for _, _, x in call.arrays()]):
            return self._value_with_custom_gradient(call)
        return self._value(call)

    def value_and_grad(self, *args, weight=None, where=None, backend=None, **inputs):
        call = self._prepare(args, inputs, weight, where, backend)
        out, pullback = self._value_and_pullback(call)
        return out, pullback(1.0)

    def grad(self, *args, weight=None, where=None, backend=None, **inputs):
        """Gradients of the reduced loss (of its sum, for reduction="none")."""
        return self.value_and_grad(*args, weight=weight, where=where, backend=backend, **inputs)[1]

    def vjp(self, cotangent, *args, weight=None, where=None, backend=None, **inputs):
        """Gradients for the upstream ``cotangent`` of the loss output (per-sample shape with "none")."""
        call = self._prepare(args, inputs, weight, where, backend)
        out, pullback = self._value_and_pullback(call)
        ct = call.convert("cotangent", cotangent)
        _validation.check_cotangent(ct, tuple(out.shape))
        return pullback(ct)

    def _plain_value(self, *args, weight=None, where=None, backend=None, **inputs):
        """The reduced loss from the value function alone, never through the custom-gradient wrapper.

        A framework's autodiff of it differentiates the value function itself: the
        conformance ``autodiff`` check compares that with ``vjp``.
        """
        return self._value(self._prepare(args, inputs, weight, where, backend))

    # -- internals -------------------------------------------------------------
    def _value(self, call):
        return self._reduce(call, self.spec.value(call.xp, **call.inputs, **self.options))[0]

    def _value_and_pullback(self, call):
        """(reduced loss, pullback from its cotangent to the dict of gradients): the one path of every gradient.

        The cotangent is an array of the loss output's shape, or the Python float 1.0 (``value_and_grad``).
        """
        unreduced, pullback = self._forward(call)
        out, reduction_pullback = self._reduce(call, unreduced)

        def gradients(ct):
            ct = ct if isinstance(ct, float) else _as_dtype(call.xp, ct, out.dtype)
            return self._gradients(call, pullback(reduction_pullback(ct)))

        return out, gradients

    def _value_with_custom_gradient(self, call):
        """The reduced loss as a function the framework differentiates with ``_value_and_pullback``.

        The adapter gets every array of the call (each layer of a layer input,
        then weight and where) and which of them are differentiable; the
        pullback returns one gradient per array, None for the others.
        """
        entries = call.arrays()
        differentiable = [n in self.spec.differentiable for n, _, _ in entries]

        def forward(arrays):
            out, pullback = self._value_and_pullback(call.replaced(arrays))

            def flat_pullback(ct):
                grads = {n: dict(_layers.items(g)) for n, g in pullback(ct).items()}
                return [grads[n][key] if d else None for (n, key, _), d in zip(entries, differentiable)]

            return out, flat_pullback

        return call.adapter.custom_gradient(
            [x for _, _, x in entries], value=lambda arrays: self._value(call.replaced(arrays)), forward=forward,
            differentiable=differentiable, labels=[_layers.label(n, key) for n, key, _ in entries],
            no_gradient=lambda label, stop: _validation.no_gradient_for(self.name, label, self.differentiable, stop))

    def _forward(self, call):
        spec = self.spec
        if spec.fused is not None:
            return spec.fused(call.xp, **call.inputs, **self.options)
        unreduced = spec.value(call.xp, **call.inputs, **self.options)
        return unreduced, lambda ct: spec.vjp(call.xp, ct, **call.inputs, **self.options)

    def _reduce(self, call, unreduced):
        spec = self.spec
        mean_weights = scale = None
        if self.reduction == "mean" and spec.mean_weights is not None:
            mean_weights = spec.mean_weights(call.xp, **call.inputs, **self.options)
        if self.reduction == "mean" and spec.mean_scale is not None:
            scale = spec.mean_scale(call.xp, **call.inputs, **self.options)
            unreduced = unreduced / scale
        out, pullback = reduce(call.xp, unreduced, reduction=self.reduction, weight=call.weight, where=call.where,
                               axis=call.axis, weighted_mean=spec.weighted_mean, mean_weights=mean_weights)
        return out, pullback if scale is None else (lambda ct: pullback(ct) / scale)

    def _gradients(self, call, grads):
        xp = call.xp
        out = {}
        for name in self.spec.differentiable:
            x = call.inputs[name]
            if x is None:  # an optional input left out has no gradient
                continue
            if name in self.spec.layer_inputs:
                per_layer = dict(_layers.items(grads[name]))
                out[name] = _layers.map_layers(lambda key, a: _as_dtype(xp, per_layer[key], a.dtype), x)
                continue
            g = grads[name]
            if tuple(g.shape) != tuple(x.shape):
                g = _unbroadcast(xp, g, tuple(x.shape))
            if call.where is not None and self.spec.elementwise and tuple(g.shape) == call.loss_shape:
                # a masked element's gradient is 0 even where the loss there is not finite
                g = xp.where(xp.broadcast_to(per_element(xp, call.where, g.shape), g.shape), g, xp.zeros_like(g))
            out[name] = _as_dtype(xp, g, x.dtype)
        return out

    def _prepare(self, args, inputs, weight, where, backend):
        spec = self.spec
        if self._owns_weight and weight is not None:  # the loss's own weight (class weights)
            inputs, weight = {**inputs, "weight": weight}, None
        bound = _validation.bind_arguments(self.name, spec.inputs, args, inputs, spec.optional_inputs)
        call = _Call(self, bound, weight, where, backend)
        xp = call.xp
        for name in self._floating_inputs:
            for label, x in call.leaves(name):
                _validation.check_floating(label, x, xp)
        matched = self._shape_matched
        for other in matched[1:]:
            _validation.check_same_shape(matched[0], call.inputs[matched[0]], other, call.inputs[other])
        if spec.validate is not None:
            concrete = all(call.adapter.is_concrete(x) for name in spec.inputs for _, x in call.leaves(name))
            spec.validate(xp, call.inputs, self.options, concrete)
        shape = call.loss_shape = spec.loss_shape(call.inputs, self.options)
        call.axis = None if self.axis is None else _validation.check_axis("axis", self.axis, len(shape))
        if self.reduction == "batchmean" and not shape:
            raise _validation.batchmean_of_scalar(self.name)
        if call.weight is not None:
            _validation.check_weight_shape(call.weight, shape)
        if call.where is not None:
            _validation.check_where(call.where, xp, shape)
        return call


def _as_dtype(xp, g, dtype):
    return g if g.dtype == dtype else xp.astype(g, dtype)


def _unbroadcast(xp, g, shape):
    """Sum a gradient over the axes along which its input was broadcast."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    g = xp.sum(g, axis=axes, keepdims=True) if axes else g
    return xp.reshape(g, shape)


class _Call:
    """One call's backend, namespace and converted arrays."""

    __slots__ = ("adapter", "xp", "device", "layered", "inputs", "weight", "where", "axis", "loss_shape")

    def __init__(self, loss, bound, weight, where, backend):
        choice = config.configured(backend)
        layered = self.layered = loss.spec.layer_inputs
        if choice.device is None and not layered and self._as_given(loss, bound, weight, where, choice):
            return
        leaves = [(n, key, x) for n, v in bound.items() for key, x in (_layers.items(v) if n in layered else [(None, v)])]
        extras = [(n, None, x) for n, x in (("weight", weight), ("where", where)) if x is not None]
        arrays = [(_layers.label(n, key), x, backends.library_of(x)) for n, key, x in (*leaves, *extras)]
        name = choice.backend or _infer(arrays)
        adapter = backends.get_adapter(name)
        self.adapter, self.xp = adapter, adapter.xp
        if choice.device is not None:
            adapter.check_device(choice.device)
        self.device = choice.device or _common_device(adapter, arrays, name)
        converted = [self._convert(*array, name) for array in arrays]
        by_leaf = {(n, key): x for (n, key, _), x in zip(leaves, converted)}
        self.inputs = {n: None if n not in bound else
                       _layers.map_layers(lambda key, _, n=n: by_leaf[n, key], bound[n]) if n in layered else
                       by_leaf[n, None] for n in loss.spec.inputs}
        extra = {n: x for (n, _, _), x in zip(extras, converted[len(leaves):])}
        self.weight, self.where = extra.get("weight"), extra.get("where")

    def _as_given(self, loss, bound, weight, where, choice) -> bool:
        """The common case: every array is of the one library that is the backend, all on one device (and no
        device is configured, no input has layers), so nothing is converted. False: the general path decides,
        and raises the errors."""
        given = [*bound.values(), *(x for x in (weight, where) if x is not None)]
        libraries = {backends.library_of(x) for x in given}
        name = libraries.pop() if len(libraries) == 1 else None
        if name is None or choice.backend not in (None, name):
            return False
        adapter = backends.get_adapter(name)
        devices = {adapter.device_of(x) for x in given}
        devices.discard(None)  # traced
        if len(devices) > 1:
            return False
        self.adapter, self.xp, self.device = adapter, adapter.xp, devices.pop() if devices else None
        self.inputs = {n: bound.get(n) for n in loss.spec.inputs}
        self.weight, self.where = weight, where
        return True

    def _convert(self, arg, x, library, name):
        if library == name and (self.device is None or self.adapter.on_device(x, self.device)):
            return x
        if library not in (None, "numpy", name):
            raise _validation.wrong_library(arg, library, name)
        if library == name:
            return self.adapter.to_device(x, self.device)
        return self.adapter.asarray(x if library == "numpy" else np.asarray(x), device=self.device)

    def convert(self, arg, x):
        return self._convert(arg, x, backends.library_of(x), self.adapter.name)

    def leaves(self, name: str) -> list:
        """[(label, array)] of input ``name``: its layers, the one array, or none where it was left out."""
        x = self.inputs[name]
        if x is None:
            return []
        if name not in self.layered:
            return [(name, x)]
        return [(_layers.label(name, key), a) for key, a in _layers.items(x)]

    def arrays(self) -> list:
        """[(name, layer key or None, array)]: every array of the call, the engine's weight and where last."""
        inputs = [(n, key, x) for n, v in self.inputs.items() if v is not None
                  for key, x in (_layers.items(v) if n in self.layered else [(None, v)])]
        return inputs + [(n, None, x) for n, x in (("weight", self.weight), ("where", self.where)) if x is not None]

    def replaced(self, arrays):
        """A copy of this call whose arrays (in ``arrays()`` order) are ``arrays``.

        (An engine weight never meets an input named weight: ``_prepare`` makes it that input.)
        """
        new = copy.copy(self)
        by_key = {(n, key): x for (n, key, _), x in zip(self.arrays(), arrays)}
        new.inputs = {n: None if v is None else _layers.map_layers(lambda key, _, n=n: by_key[n, key], v)
                      for n, v in self.inputs.items()}
        new.weight, new.where = (None if old is None else by_key[n, None]
                                 for n, old in (("weight", self.weight), ("where", self.where)))
        return new


def _infer(arrays):
    tensors = [(n, lib) for n, _, lib in arrays if lib not in (None, "numpy")]
    for n, lib in tensors[1:]:
        if lib != tensors[0][1]:
            raise _validation.mixed_libraries(tensors[0], (n, lib))
    return tensors[0][1] if tensors else "numpy"


def _common_device(adapter, arrays, name):
    first = None
    for n, x, lib in arrays:
        if lib != name:
            continue
        dev = adapter.device_of(x)
        if dev is None:  # traced: no concrete device to compare
            continue
        if first is None:
            first = (n, dev)
        elif dev != first[1]:
            raise _validation.mixed_devices(first, (n, dev))
    return None if first is None else first[1]
