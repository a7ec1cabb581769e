"""What every objective shares with ``Loss``: the call methods, input routing, backend choice and gradient sums.

A *term* is a ``Loss`` or an ``Objective``. Terms are called with their inputs
by name; an objective binds positional arguments to names once, at the top,
and hands each part the inputs it names. ``weight`` is never an input name
here: it is the call keyword (for a loss that owns an input named ``weight``,
such as cross_entropy's class weights, that keyword is that input, as when
the loss is called on its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import _layers, _validation, backends, config
from .._loss import Loss

VALUE, GRAD, VJP = "value", "value_and_grad", "vjp"


@dataclass(frozen=True)
class Signature:
    """A term's input names, which get gradients, which are predictions, which must be given, and what an
    array passed as ``weight=`` means to it ("per-element", "class" for a loss's own weight input, or "mixed")."""

    inputs: tuple[str, ...]
    differentiable: tuple[str, ...]
    predictions: tuple[str, ...]
    required: tuple[str, ...]
    weight: str


def signature(term) -> Signature:
    if isinstance(term, Objective):
        return term.signature
    spec = term.spec
    inputs = tuple(n for n in spec.inputs if n != "weight")
    return Signature(inputs, spec.differentiable, spec.prediction_inputs,
                     tuple(n for n in inputs if n not in spec.optional_inputs),
                     "class" if "weight" in spec.inputs else "per-element")


def check_term(where: str, term):
    """``term`` if it can be a part: a ``Loss`` or an objective other than a ``MultiOutputLoss``."""
    if isinstance(term, Objective) and not term.nestable:
        raise _validation.objective_not_nestable(where, type(term).__name__)
    if not isinstance(term, (Loss, Objective)):
        raise _validation.not_a_term(where, term)
    return term


@dataclass(frozen=True)
class CallOptions:
    """The engine keywords of one call: per-element ``weight``, boolean ``where`` and the backend for every part."""

    weight: object = None
    where: object = None
    backend: str | None = None


@dataclass
class Evaluation:
    """A term's value (None for a vjp), its gradients (None for a value), its value before its own weight,
    and its named components (the unweighted part values)."""

    total: object
    grads: dict | None
    raw: object
    components: dict = field(default_factory=dict)


def evaluate(term, inputs: dict, options: CallOptions, mode: str, cotangent=None) -> Evaluation:
    """One call of ``term`` on its named ``inputs``."""
    if isinstance(term, Objective):
        return term._evaluate(inputs, options, mode, cotangent)
    keywords = {"weight": options.weight, "where": options.where, "backend": options.backend}
    if mode == VALUE:
        value = term.value(**inputs, **keywords)
        return Evaluation(value, None, value)
    if mode == GRAD:
        value, grads = term.value_and_grad(**inputs, **keywords)
        return Evaluation(value, grads, value)
    return Evaluation(None, term.vjp(cotangent, **inputs, **keywords), None)


class Objective:
    """A combination of losses with the contract of ``Loss``.

    ``objective(*inputs)`` is the total; ``value_and_grad`` returns it with a
    dict input name -> gradient (per input, the sum of the parts' weighted
    gradients); ``grad`` the dict alone; ``vjp(cotangent, ...)`` the gradients
    for an upstream cotangent of the total; ``to_config()`` a JSON-serialisable
    dict that ``mlo.from_config`` rebuilds. Every call takes ``weight=``,
    ``where=`` and ``backend=`` through to the parts, and
    ``return_components=True`` adds the dict of unweighted part values.
    """

    name: str
    nestable = True

    # -- description -----------------------------------------------------------
    @property
    def signature(self) -> Signature:  # pragma: no cover - every objective overrides it
        raise NotImplementedError

    inputs = property(lambda self: self.signature.inputs)
    differentiable = property(lambda self: self.signature.differentiable)
    predictions = property(lambda self: self.signature.predictions)
    required = property(lambda self: self.signature.required)

    @property
    def positional(self) -> tuple[tuple[str, ...], str | None]:
        """The input names positional arguments bind to, and why no more can (None: all of them)."""
        return self.inputs, None

    def to_config(self) -> dict:  # pragma: no cover - every objective overrides it
        raise NotImplementedError

    def children(self) -> list:
        """The terms this objective is made of."""
        return []

    # -- schedules -------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Set the training step of every ``ScheduledLoss`` inside."""
        for child in self.children():
            if isinstance(child, Objective):
                child.set_step(step)

    def step(self) -> None:
        """Advance every ``ScheduledLoss`` inside by one training step."""
        for child in self.children():
            if isinstance(child, Objective):
                child.step()

    # -- public calls ----------------------------------------------------------
    def __call__(self, *args, weight=None, where=None, backend=None, return_components=False, **inputs):
        return self.value(*args, weight=weight, where=where, backend=backend,
                          return_components=return_components, **inputs)

    def value(self, *args, weight=None, where=None, backend=None, return_components=False, **inputs):
        result = self._run(VALUE, None, args, inputs, weight, where, backend)
        return (result.total, result.components) if return_components else result.total

    def value_and_grad(self, *args, weight=None, where=None, backend=None, return_components=False, **inputs):
        result = self._run(GRAD, None, args, inputs, weight, where, backend)
        return (result.total, result.grads, result.components) if return_components else (result.total, result.grads)

    def grad(self, *args, weight=None, where=None, backend=None, **inputs):
        """Gradients of the total (of its sum, where the parts are unreduced)."""
        return self._run(GRAD, None, args, inputs, weight, where, backend).grads

    def vjp(self, cotangent, *args, weight=None, where=None, backend=None, **inputs):
        """Gradients for the upstream ``cotangent`` of the total (its shape: the parts' output shape)."""
        return self._run(VJP, cotangent, args, inputs, weight, where, backend).grads

    # -- internals -------------------------------------------------------------
    def _evaluate(self, inputs: dict, options: CallOptions, mode: str, cotangent) -> Evaluation:  # pragma: no cover
        raise NotImplementedError

    def _run(self, mode, cotangent, args, inputs, weight, where, backend):
        bound = self._bind(args, inputs)
        options = CallOptions(weight, where, resolve_backend(backend, {**bound, "weight": weight, "where": where}))
        return self._evaluate(bound, options, mode, cotangent)

    def _bind(self, args, inputs):
        positional, limit = self.positional
        if len(args) > len(positional):
            raise _validation.too_many_positional(self.name, len(args), positional, limit)
        optional = tuple(n for n in self.inputs if n not in self.required)
        return _validation.bind_arguments(self.name, self.inputs, args, inputs, optional)


# --------------------------------------------------------------------------
# routing


def union(names_per_part) -> tuple[str, ...]:
    """Names in order of first appearance."""
    return tuple(dict.fromkeys(n for names in names_per_part for n in names))


def positional_names(inputs_per_part: dict) -> tuple[tuple[str, ...], str | None]:
    """The names positional arguments bind to: the parts' inputs in order of first appearance, up to the first
    name that some part takes at another position (returned with a description of the conflict)."""
    names = union(inputs_per_part.values())
    for i, name in enumerate(names):
        elsewhere = [f"input {inputs.index(name) + 1} of {part!r}" for part, inputs in inputs_per_part.items()
                     if name in inputs and inputs.index(name) != i]
        if elsewhere:
            return names[:i], f"`{name}` would be positional argument {i + 1} but is {', '.join(elsewhere)}"
    return names, None


def per_part(owner: str, arg: str, value, names) -> dict:
    """``value`` for each part: a dict part name -> value goes to the parts it names, anything else to all."""
    if not isinstance(value, Mapping):
        return dict.fromkeys(names, value)
    unknown = [k for k in value if k not in names]
    if unknown:
        raise _validation.unknown_parts(owner, arg, unknown, names)
    return {n: value.get(n) for n in names}


def _leaves(name, value):
    """(label, leaf) of every array in ``value``: itself, or the entries of (nested) dicts and lists."""
    if isinstance(value, (Mapping, list, tuple)):
        return [leaf for key, x in _layers.items(value) for leaf in _leaves(_layers.label(name, key), x)]
    return [(name, value)]


def resolve_backend(backend, named: dict):
    """The backend every part of one call uses.

    An explicit ``backend=`` or a configured one (``use_backend``, ``set_backend``,
    the environment, the config file) is left to each part, which resolves it
    with its device; otherwise it is inferred once from all the call's arrays,
    so parts that see different inputs still compute on one library.
    """
    if backend is not None or config.configured().backend is not None:
        return backend
    found = None
    for label, x in (leaf for n, v in named.items() if v is not None for leaf in _leaves(n, v)):
        library = backends.library_of(x)
        if library in (None, "numpy"):
            continue
        if found is None:
            found = (label, library)
        elif library != found[1]:
            raise _validation.mixed_libraries(found, (label, library))
    return "numpy" if found is None else found[1]


# --------------------------------------------------------------------------
# values and gradients


def total_of(owner: str, values: dict):
    """The sum of the parts' values, which must have one shape."""
    shapes = {n: tuple(v.shape) for n, v in values.items()}
    if len(set(shapes.values())) > 1:
        raise _validation.part_shapes(owner, shapes)
    parts = iter(values.values())
    total = next(parts)
    for v in parts:
        total = total + v
    return total


def times(x, factor):
    """``x * factor`` in ``x``'s dtype (``factor``: a Python number or a 0-d array of x's library)."""
    out = x * factor
    if out.dtype == x.dtype:
        return out
    return backends.get_adapter(backends.library_of(x)).xp.astype(out, x.dtype)


def scaled(grads: dict, factor) -> dict:
    """Every gradient (an array, or a dict/list of layer arrays) times ``factor``."""
    return {n: _layers.map_layers(lambda _, g: times(g, factor), v) for n, v in grads.items()}


def summed(grads_per_part, order) -> dict:
    """Per input name, the sum of the parts' gradients (a part without that input adds nothing), in ``order``."""
    out: dict = {}
    for grads in grads_per_part:
        for n, g in grads.items():
            out[n] = g if n not in out else _add(out[n], g)
    return {n: out[n] for n in order if n in out}


def _add(a, b):
    other = dict(_layers.items(b))
    return _layers.map_layers(lambda key, x: x + other[key], a)
