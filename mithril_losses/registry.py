"""Spec records and the registry: ``register``, ``get``, ``available``, ``from_config``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from . import _layers, _validation
from ._reduction import REDUCTIONS


@dataclass(frozen=True)
class Option:
    """A keyword-only loss option: its default, a check that returns the normalised value, and a doc line."""

    name: str
    default: Any
    doc: str
    check: Callable[[str, Any], Any] | None = None

    def normalise(self, value):
        if self.check is None:
            return value
        out = self.check(self.name, value)
        return value if out is None else out


@dataclass(frozen=True)
class Reference:
    """Another library's implementation of a loss: its qualified name and a caller.

    ``call(lib, inputs, options, reduction, weight)`` computes the reduced loss
    with that library (``lib`` is its imported top-level module).
    """

    name: str
    call: Callable

    def __call__(self, *args):
        return self.call(*args)


@dataclass(frozen=True)
class Tolerance:
    """A loosened or tightened tolerance for one dtype, with the reason."""

    dtype: str
    rtol: float
    atol: float
    reason: str


@dataclass(frozen=True)
class LossSpec:
    """Everything the engine, conformance and docs know about one loss.

    The pair (and its optional fused form), all called with the namespace
    ``xp``, the inputs by name and the options as keywords:

    - ``value(xp, **inputs, **options)``: the unreduced loss (per element or per sample);
    - ``vjp(xp, cotangent, **inputs, **options)``: dict input name -> gradient, for
      every ``differentiable`` input, each in its input's shape;
    - ``fused(xp, **inputs, **options)``: ``(value, pullback)`` sharing intermediates.

    Inputs: ``label_inputs`` may be integer (all others must be floating);
    ``optional_inputs`` may be omitted (the functions get None); a loss whose
    inputs include ``weight`` owns that name (PyTorch's class weights) and the
    engine's per-element weight is not offered; ``same_shape`` inputs must match
    (default: all); ``predictions`` are what the functional ``_gradient`` returns;
    ``layer_inputs`` may be one array, a list or a dict of arrays (features per
    layer, see ``_layers``): the functions get them in that structure, with
    every layer converted, and return their gradients in it (``output_shape``
    gets their shapes as a dict layer key -> shape).

    Shape and checks: ``output_shape(shapes, options)`` gives the unreduced
    loss's shape (None: elementwise, the first input's shape), so weights and
    masks are checked before any arithmetic; ``validate(xp, inputs, options,
    concrete)`` adds the loss's own checks, value checks only when ``concrete``;
    ``check_options(options)`` checks options against each other at ``get()``.

    Reduction: a weighted mean divides by the weights' sum, or by the element
    count with ``weighted_mean="count"`` (PyTorch's huber_loss);
    ``mean_weights(xp, **inputs, **options)`` gives per-element weights whose sum
    divides a "mean" (PyTorch's class-weighted, ignore_index-aware mean);
    ``mean_scale(xp, **inputs, **options)`` per-element divisors applied before a
    "mean" (PyTorch's CTC mean of loss / target length).

    Domains: ``domains`` maps an input to the values ``validate`` accepts on
    concrete arrays (outside them: a ValueError naming the input and showing the
    value): an interval ``"[0, 1]"``, ``"(0, inf)"``, ``"[0, C)"`` (an end that
    is a name, such as C classes or T frames, is a size the inputs give; the
    notes say which), a set ``"{-1, 1}"``, or ``"boxes"`` ((x1, y1, x2, y2) with
    x1 <= x2 and y1 <= y2). A domain that depends on the options or on the
    input's dtype is a tuple of ``(domain, when)`` pairs, the first whose
    ``when`` holds applying: ``when`` is a dict of option values, and its key
    ``"dtype"`` ("integral" or "real floating") the input's kind. Inputs not
    listed accept every value of their dtype; a label equal to the loss's
    ``ignore_index`` option is accepted besides its domain.

    Conformance and docs: ``sample(rng, shape, options)`` draws valid float64
    NumPy inputs away from kinks; ``option_cases`` are the option sets checked
    besides the defaults; ``references`` maps a library to a ``Reference``;
    ``tolerances`` loosen or tighten a dtype's tolerance with a reason;
    ``functional`` overrides the generated function names (PyTorch's ``cross_entropy``);
    ``stopped_gradient`` says why the gradient deliberately holds a term of
    the value constant (a stop-gradient, as the reference implementation does),
    so finite differences of the value cannot check it (they are skipped, with that reason).
    """

    name: str
    family: str
    summary: str
    inputs: tuple[str, ...]
    differentiable: tuple[str, ...]
    value: Callable
    vjp: Callable
    formula: str
    gradient: str
    sample: Callable
    fused: Callable | None = None
    options: tuple[Option, ...] = ()
    aliases: tuple[str, ...] = ()
    predictions: tuple[str, ...] | None = None
    same_shape: tuple[str, ...] | None = None
    validate: Callable | None = None
    check_options: Callable | None = None
    reductions: tuple[str, ...] = REDUCTIONS
    default_reduction: str = "mean"
    weighted_mean: str = "weights"
    references: dict = field(default_factory=dict)
    literature: tuple[str, ...] = ()
    tolerances: tuple[Tolerance, ...] = ()
    option_cases: tuple[dict, ...] = ({},)
    functional: tuple[str, ...] | None = None
    label_inputs: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    layer_inputs: tuple[str, ...] = ()
    output_shape: Callable | None = None
    mean_weights: Callable | None = None
    mean_scale: Callable | None = None
    stopped_gradient: str = ""
    domains: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def prediction_inputs(self) -> tuple[str, ...]:
        return self.predictions or self.differentiable[:1]

    @property
    def elementwise(self) -> bool:
        return self.output_shape is None

    def loss_shape(self, inputs: dict, options: dict) -> tuple:
        """Shape of the unreduced loss for these inputs."""
        if self.output_shape is None:
            return tuple(inputs[self.inputs[0]].shape)
        shapes = {n: None if x is None else tuple(x.shape) if n not in self.layer_inputs else
                  {key: tuple(a.shape) for key, a in _layers.items(x)} for n, x in inputs.items()}
        return tuple(self.output_shape(shapes, options))

    def domain(self, name: str, options: dict, kind: str) -> str | None:
        """The declared domain of input ``name`` for these (normalised) options and an input of dtype ``kind``
        ("integral", "real floating" or "bool"); None where every value is accepted."""
        entry = self.domains.get(name)
        if entry is None or isinstance(entry, str):
            return entry
        for domain, when in entry:
            if all((kind if key == "dtype" else options.get(key)) == value for key, value in when.items()):
                return domain
        return None

    @property
    def shape_matched(self) -> tuple[str, ...]:
        return self.inputs if self.same_shape is None else self.same_shape

    @property
    def own_options(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    @property
    def option_names(self) -> tuple[str, ...]:
        """``reduction``, the engine's reduction ``axis`` (unless the loss has its own ``axis``), the loss's options."""
        engine = ("reduction",) if "axis" in self.own_options else ("reduction", "axis")
        return engine + self.own_options

    @property
    def functional_names(self) -> tuple[str, ...]:
        """Function names: ``functional`` where given, else ``<name>_loss`` plus aliases that end in ``_loss``."""
        if self.functional is not None:
            return self.functional
        own = self.name if self.name.endswith("_loss") else f"{self.name}_loss"
        return (own,) + tuple(a for a in self.aliases if a.endswith("_loss") and a != own)


_LOCK = threading.Lock()
_SPECS: dict[str, LossSpec] = {}
_NAMES: dict[str, str] = {}  # canonical names and aliases -> canonical name


def register(spec: LossSpec, *, replace: bool = False) -> LossSpec:
    """Add a loss (a user's own too) to the registry and to the functional names."""
    from . import functional

    _load_builtin()  # a user's loss goes in after the built-ins, so a clash is seen now, not at first lookup
    with _LOCK:
        taken = [n for n in (spec.name, *spec.aliases) if n in _NAMES and _NAMES[n] != spec.name]
        if (spec.name in _SPECS or taken) and not replace:
            raise _validation.not_registered(spec.name if spec.name in _SPECS else taken[0])
        _SPECS[spec.name] = spec
        for n in (spec.name, *spec.aliases):
            _NAMES[n] = spec.name
        functional.expose(spec)
    return spec


def spec(name: str) -> LossSpec:
    """The spec of a loss by canonical name or alias."""
    _load_builtin()
    try:
        return _SPECS[_NAMES[name]]
    except (KeyError, TypeError):
        raise _validation.unknown_name("loss", name, _NAMES) from None


def available(family: str | None = None) -> list[str]:
    """Sorted canonical names of the registered losses, optionally of one family."""
    return sorted(s.name for s in _registered() if family is None or s.family == family)


def families() -> list[str]:
    return sorted({s.family for s in _registered()})


def _registered() -> list[LossSpec]:
    """The registered specs, copied under the lock: a register() in another thread cannot change them mid-read."""
    _load_builtin()
    with _LOCK:
        return list(_SPECS.values())


def get(name: str, *, compile=False, **options):  # noqa: A002  (the mlo.compile it stands for)
    """A configured loss by canonical name or alias; unknown names raise KeyError with the closest names.

    ``compile=True`` (or a dict of compiler options) gives ``mlo.compile(loss, **those options)``.
    """
    from ._compiled import compile as compiled
    from ._loss import Loss

    loss = Loss(spec(name), **options)
    if compile is False:
        return loss
    if compile is True or (isinstance(compile, dict) and all(isinstance(k, str) for k in compile)):
        return compiled(loss, **({} if compile is True else compile))
    raise _validation.bad_compile_option(compile)


def from_config(config: dict):
    """Rebuild a loss from ``Loss.to_config()``, or an objective from its (nested) config tagged ``"composite"``.

    A loss config's ``"compile"`` (true, or a dict of compiler options) gives a compiled loss, as ``get`` does.

    Only registered names and options, and the composite kinds of ``mithril_losses.compose``, are accepted.
    """
    if isinstance(config, dict) and "composite" in config:
        from .compose.config import from_config as objective_from_config

        return objective_from_config(config)
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config) \
            or not isinstance(config.get("name"), str):
        raise _validation.bad_loss_config(config)
    options = {k: v for k, v in config.items() if k != "name"}
    return get(config["name"], **options)


_loaded = False
_loading = False  # set while the lock's holder imports the families
_LOADING = threading.RLock()


def _load_builtin() -> None:
    """Register the built-in families once; other threads wait until all of them are there."""
    global _loaded, _loading
    if _loaded:
        return
    with _LOADING:
        if _loaded or _loading:  # _loading: this very thread is importing them (a re-entrant lookup)
            return
        _loading = True
        try:
            from . import losses  # noqa: F401  (registers the built-in families)

            _loaded = True
        finally:
            _loading = False
