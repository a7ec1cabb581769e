"""Benchmarks: ``value_and_grad`` of mithril_losses against each framework's own loss + autodiff.

``mithril-losses bench`` (or ``python benchmarks/run.py``). For each loss and
input size, on every installed backend, in the same run and with the
repetitions interleaved (so a slow moment of the machine hits both sides):

- NumPy: ``loss.value_and_grad`` against the memory floor, a copy of the
  inputs (reading two arrays and writing two, as value_and_grad must);
- PyTorch (eager): against the loss's ``torch.nn.functional`` reference and
  ``backward()`` with both inputs requiring grad;
- JAX: eager against eager ``jax.value_and_grad`` of the optax-style mean
  formula, and ``jax.jit(lambda x, y: loss.value_and_grad(x, y))`` against
  ``jax.jit(jax.value_and_grad(...))``;
- MLX: against ``mx.value_and_grad`` of the ``mlx.nn.losses`` function, eager
  and under ``mx.compile``.

Each side's time is the median over the repetitions; the ratio is ours /
theirs (below 1: mithril_losses is faster). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import registry

DEFAULT_SIZES = ((4096, 1000), (1000,))
# Losses whose inputs are not arrays of one shape: their own default sizes, read as their input maker reads them.
LOSS_SIZES = {"ctc": ((200, 32, 30), (50, 4, 10))}  # (T, N, C)
HEADLINE = ("mse", "huber", "cross_entropy", "binary_cross_entropy_with_logits")
BACKENDS = ("numpy", "torch", "jax", "mlx")
DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
RESULTS_START, RESULTS_END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"

# The frameworks' own formulas of the reduced ("mean") loss, per canonical name, taking the loss's
# inputs in order. JAX: optax where it has the loss, else the same formula in jax.numpy.
_JAX_FORMULAS = {
    "cross_entropy": lambda optax, jnp, o: lambda x, y: optax.losses.softmax_cross_entropy_with_integer_labels(
        x, y).mean(),
    "binary_cross_entropy_with_logits": lambda optax, jnp, o: lambda x, y: optax.losses.sigmoid_binary_cross_entropy(
        x, y).mean(),
    "mse": lambda optax, jnp, o: lambda x, y: optax.losses.squared_error(x, y).mean(),
    "huber": lambda optax, jnp, o: lambda x, y: optax.losses.huber_loss(x, y, delta=o["delta"]).mean(),
    "l1": lambda optax, jnp, o: lambda x, y: jnp.abs(x - y).mean(),
    "smooth_l1": lambda optax, jnp, o: lambda x, y: optax.losses.huber_loss(x, y, delta=o["beta"]).mean() / o["beta"],
    "log_cosh": lambda optax, jnp, o: lambda x, y: optax.losses.log_cosh(x, y).mean(),
}
_MLX_FORMULAS = {
    "cross_entropy": lambda nn, o: lambda x, y: nn.losses.cross_entropy(x, y, reduction="mean"),
    "binary_cross_entropy_with_logits": lambda nn, o: lambda x, y: nn.losses.binary_cross_entropy(
        x, y, with_logits=True, reduction="mean"),
    "mse": lambda nn, o: lambda x, y: nn.losses.mse_loss(x, y, reduction="mean"),
    "huber": lambda nn, o: lambda x, y: nn.losses.huber_loss(x, y, delta=o["delta"], reduction="mean"),
    "l1": lambda nn, o: lambda x, y: nn.losses.l1_loss(x, y, reduction="mean"),
    "smooth_l1": lambda nn, o: lambda x, y: nn.losses.smooth_l1_loss(x, y, beta=o["beta"], reduction="mean"),
    "log_cosh": lambda nn, o: lambda x, y: nn.losses.log_cosh_loss(x, y, reduction="mean"),
}


@dataclass
class Pair:
    """One comparison: our callable and theirs on the same backend and inputs."""

    backend: str
    mode: str
    ours_label: str
    theirs_label: str
    ours: object
    theirs: object
    sync: object
    ours_times: list = field(default_factory=list)
    theirs_times: list = field(default_factory=list)
    error: str = ""


@dataclass
class Row:
    loss: str
    shape: tuple
    dtype: str
    backend: str
    mode: str
    ours_label: str
    theirs_label: str
    ours_ms: float | None
    theirs_ms: float | None
    ratio: float | None
    reps: int
    error: str = ""
    ours_all_ms: list = field(default_factory=list)
    theirs_all_ms: list = field(default_factory=list)


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    """Where the numbers were taken."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
            memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "usable_cpus": usable, "memory": memory,
            "python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "jax", "mlx", "optax"):
        if _installed(mod):
            try:
                m = importlib.import_module("mlx.core" if mod == "mlx" else mod)
                info[mod] = getattr(m, "__version__", "?")
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                info[mod] = f"import failed: {err}"
    if "torch" in info and not str(info["torch"]).startswith("import failed"):
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def machine_line(info: dict) -> str:
    libs = ", ".join(f"{k} {info[k]}" for k in ("numpy", "torch", "jax", "mlx", "optax") if k in info)
    memory = f", {info['memory']} RAM" if info.get("memory") else ""
    return (f"{info['cpu'] or info['machine']}, {info['usable_cpus']} usable CPUs (nproc; of {info['cpu_count']})"
            f"{memory}, {info['platform']}, Python {info['python']}; {libs}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- pairs per backend


def _options(spec) -> dict:
    return {o.name: o.default for o in spec.options}


def _make_inputs(spec, shape, dtype, rng) -> dict:
    """Standard-normal inputs; class indices (N, d1, ...) for cross entropy; 0/1 targets for logits losses;
    log-softmax (T, N, C) with padded targets of up to T/3 labels for CTC."""
    if spec.name == "ctc":
        steps, batch, classes = shape
        logits = rng.standard_normal(shape)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        longest = steps // 3
        return {"log_probs": log_probs.astype(dtype), "targets": rng.integers(1, classes, (batch, longest)),
                "input_lengths": np.full(batch, steps), "target_lengths": rng.integers(longest // 2, longest + 1, batch)}
    x = rng.standard_normal(shape).astype(dtype)
    if spec.name == "cross_entropy":
        classes, labels = (shape[1], shape[:1] + shape[2:]) if len(shape) > 1 else (shape[0], ())
        return {"input": x, "target": rng.integers(0, classes, labels)}
    if spec.name == "binary_cross_entropy_with_logits":
        return {"input": x, "target": (rng.random(shape) < 0.5).astype(dtype)}
    return {"input": x, "target": rng.standard_normal(shape).astype(dtype)}


def _argnums(spec):
    return [i for i, n in enumerate(("input", "target")) if n in spec.differentiable]


def _numpy_pairs(loss, spec, inputs):
    def ours():
        return loss.value_and_grad(**inputs)

    def floor():
        return [a.copy() for a in inputs.values()]

    return [Pair("numpy", "eager", "mithril_losses", "memory floor (copy of the inputs)", ours, floor,
                 lambda out: None)]


def _torch_pairs(loss, spec, inputs):
    import torch

    if "torch" not in spec.references:
        return []
    ref = spec.references["torch"]
    options = _options(spec)
    ours_in = {n: torch.from_numpy(a.copy()) for n, a in inputs.items()}
    theirs_in = {n: t.clone().requires_grad_(n in spec.differentiable) for n, t in ours_in.items()}
    leaves = [t for n, t in theirs_in.items() if n in spec.differentiable]

    def ours():
        return loss.value_and_grad(**ours_in)

    def theirs():
        for t in leaves:
            t.grad = None
        out = ref(torch, theirs_in, options, "mean")
        out.backward()
        return out, [t.grad for t in leaves]

    return [Pair("torch", "eager", "mithril_losses", f"F.{_torch_name(spec)} + backward()", ours, theirs,
                 lambda out: None)]


def _torch_name(spec) -> str:
    return spec.references["torch"].name.rsplit(".", 1)[-1]


def _jax_pairs(loss, spec, inputs):
    if spec.name not in _JAX_FORMULAS or not _installed("optax"):
        return []
    import jax
    import jax.numpy as jnp
    import optax

    f = _JAX_FORMULAS[spec.name](optax, jnp, _options(spec))
    xj, yj = (jnp.asarray(inputs[n]) for n in ("input", "target"))
    theirs_eager = jax.value_and_grad(f, argnums=_argnums(spec))
    theirs_jit = jax.jit(jax.value_and_grad(f, argnums=_argnums(spec)))
    ours_jit = jax.jit(lambda a, b: loss.value_and_grad(a, b))

    def sync(out):
        jax.block_until_ready(out)

    return [
        Pair("jax", "eager", "mithril_losses", "jax.value_and_grad(optax-style mean)",
             lambda: loss.value_and_grad(xj, yj), lambda: theirs_eager(xj, yj), sync),
        Pair("jax", "jit", "jax.jit(mithril_losses)", "jax.jit(jax.value_and_grad(optax-style mean))",
             lambda: ours_jit(xj, yj), lambda: theirs_jit(xj, yj), sync),
    ]


def _mlx_pairs(loss, spec, inputs):
    if spec.name not in _MLX_FORMULAS:
        return []
    import mlx.core as mx
    import mlx.nn as nn

    f = _MLX_FORMULAS[spec.name](nn, _options(spec))
    xm, ym = (mx.array(inputs[n]) for n in ("input", "target"))
    theirs_eager = mx.value_and_grad(f, argnums=_argnums(spec))
    theirs_compiled = mx.compile(mx.value_and_grad(f, argnums=_argnums(spec)))
    ours_compiled = mx.compile(lambda a, b: loss.value_and_grad(a, b))
    mlx_name = {"mse": "mse_loss", "huber": "huber_loss", "l1": "l1_loss", "smooth_l1": "smooth_l1_loss",
                "log_cosh": "log_cosh_loss", "cross_entropy": "cross_entropy",
                "binary_cross_entropy_with_logits": "binary_cross_entropy(with_logits=True)"}[spec.name]

    def sync(out):
        mx.eval(out)

    return [
        Pair("mlx", "eager", "mithril_losses", f"mx.value_and_grad(nn.losses.{mlx_name})",
             lambda: loss.value_and_grad(xm, ym), lambda: theirs_eager(xm, ym), sync),
        Pair("mlx", "compiled", "mx.compile(mithril_losses)", f"mx.compile(mx.value_and_grad(nn.losses.{mlx_name}))",
             lambda: ours_compiled(xm, ym), lambda: theirs_compiled(xm, ym), sync),
    ]


_PAIRS = {"numpy": _numpy_pairs, "torch": _torch_pairs, "jax": _jax_pairs, "mlx": _mlx_pairs}


# --------------------------------------------------------------------------- timing


def _call(fn, sync):
    t0 = time.perf_counter()
    sync(fn())
    return time.perf_counter() - t0


def _short_error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()[0]
    return text[:160]


def run_case(name: str, shape: tuple, dtype: str, backends, reps: int, warmup: int, seed: int = 0,
             log=None) -> list[Row]:
    """Time every pair of one loss at one size; the repetitions of all pairs are interleaved."""
    spec = registry.spec(name)
    loss = registry.get(name)
    inputs = _make_inputs(spec, tuple(shape), dtype, np.random.default_rng(seed))
    pairs: list[Pair] = []
    skipped = []
    for backend in backends:
        try:
            pairs += _PAIRS[backend](loss, spec, inputs)
        except Exception as err:  # noqa: BLE001 - a backend that cannot run is reported, not fatal
            skipped.append(Row(name, shape, dtype, backend, "-", "mithril_losses", "-", None, None, None, 0,
                               _short_error(err)))
    # One pair at a time (so one framework's idle worker threads do not slow another's timed call), its two
    # sides interleaved: ours, theirs, theirs, ours, ... after a warm-up (compiles) of each. A side that
    # fails is reported and not timed.
    for p in pairs:
        sides = []
        for side in ("ours", "theirs"):
            try:
                for _ in range(max(warmup, 1)):
                    p.sync(getattr(p, side)())
            except Exception as err:  # noqa: BLE001
                p.error = (p.error + "; " if p.error else "") + f"{side} failed: {_short_error(err)}"
                continue
            sides.append(side)
        gc.collect()
        for rep in range(reps):
            for side in (sides if rep % 2 == 0 else sides[::-1]):
                getattr(p, f"{side}_times").append(_call(getattr(p, side), p.sync))
    rows = []
    for p in pairs:
        ours = statistics.median(p.ours_times) * 1e3 if p.ours_times else None
        theirs = statistics.median(p.theirs_times) * 1e3 if p.theirs_times else None
        ratio = ours / theirs if ours is not None and theirs else None
        rows.append(Row(name, tuple(shape), dtype, p.backend, p.mode, p.ours_label, p.theirs_label, ours, theirs,
                        ratio, max(len(p.ours_times), len(p.theirs_times)), p.error,
                        [t * 1e3 for t in p.ours_times], [t * 1e3 for t in p.theirs_times]))
        if log is not None:
            log(_format_row(rows[-1]))
    return rows + skipped


# --------------------------------------------------------------------------- output


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _format_row(r: Row) -> str:
    ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
    tail = f"  [{r.error}]" if r.error else ""
    return (f"{r.loss:<10} {_shape_text(r.shape):<12} {r.backend:<6} {r.mode:<9} "
            f"{_ms(r.ours_ms):>9} {_ms(r.theirs_ms):>9} {ratio:>6}  {r.theirs_label}{tail}")


def format_table(rows) -> str:
    head = (f"{'loss':<10} {'shape':<12} {'backend':<6} {'mode':<9} {'ours ms':>9} {'theirs ms':>9} "
            f"{'ratio':>6}  theirs")
    return "\n".join([head, "-" * len(head)] + [_format_row(r) for r in rows])


def format_markdown(rows, info: dict, *, command: str = "") -> str:
    lines = [
        f"Measured on: {machine_line(info)}.",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`.", ""]
    lines += [
        "| Loss | Shape | Backend | Mode | mithril_losses (ms) | Theirs (ms) | Ratio ours/theirs | Theirs |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = "-" if r.ratio is None else f"**{r.ratio:.2f}**"
        theirs = r.theirs_label + (f" ({r.error})" if r.error else "")
        lines.append(f"| {r.loss} | `{_shape_text(r.shape)}` {r.dtype} | {r.backend} | {r.mode} | "
                     f"{_ms(r.ours_ms)} | {_ms(r.theirs_ms)} | {ratio} | {theirs.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def update_markdown(path: Path, body: str) -> None:
    """Replace the results section of ``path`` (between the bench-results markers) with ``body``."""
    text = path.read_text(encoding="utf-8")
    i, j = text.find(RESULTS_START), text.find(RESULTS_END)
    if i < 0 or j < i:
        raise SystemExit(f"{path}: markers {RESULTS_START} ... {RESULTS_END} not found.")
    path.write_text(text[: i + len(RESULTS_START)] + "\n" + body + text[j:], encoding="utf-8")


# --------------------------------------------------------------------------- CLI


def default_losses() -> list[str]:
    """The headline losses, then CTC and every other regression loss with a PyTorch reference."""
    others = [n for n in registry.available("regression")
              if n not in HEADLINE and "torch" in registry.spec(n).references]
    return [n for n in (*HEADLINE, *LOSS_SIZES) if n in registry.available()] + others


def _shape(text: str) -> tuple:
    return tuple(int(n) for n in text.lower().replace("(", "").replace(")", "").split("x") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mithril-losses bench", description=__doc__.splitlines()[0])
    parser.add_argument("--losses", help="comma-separated losses (default: mse, huber, cross_entropy, "
                                         "binary_cross_entropy_with_logits and the other regression losses with a "
                                         "PyTorch reference; --quick: the first four)")
    parser.add_argument("--backends", help=f"comma-separated (default: those installed of {','.join(BACKENDS)})")
    parser.add_argument("--sizes", help="comma-separated shapes like 4096x1000,1000 (default: 4096x1000,1000)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--reps", type=int, help="timed repetitions per side (default 21 for large inputs, "
                                                  "201 for small; --quick: 11 and 51)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the headline losses only, fewer repetitions")
    parser.add_argument("--json", metavar="PATH", help="write the results (and the machine) as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the results as a Markdown table")
    parser.add_argument("--update-docs", metavar="PATH", nargs="?", const=str(DOCS_PAGE),
                        help="replace the results section of this Markdown file (default: the checkout's "
                             "docs/performance.md)")
    return parser


def _rerun_args(argv) -> list[str]:
    """The arguments as a reader would rerun them: without the output options and their paths."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--json", "--markdown"):
            i += 2
            continue
        if a == "--update-docs":
            i += 2 if i + 1 < len(argv) and not argv[i + 1].startswith("-") else 1
            continue
        if not a.startswith(("--json=", "--markdown=", "--update-docs=")):
            out.append(a)
        i += 1
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    losses = [registry.spec(n).name for n in args.losses.split(",")] if args.losses else (
        [n for n in HEADLINE if n in registry.available()] if args.quick else default_losses())
    wanted = args.backends.split(",") if args.backends else list(BACKENDS)
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        build_parser().error(f"unknown backends {unknown}; choose from {list(BACKENDS)}")
    backends = [b for b in wanted if b == "numpy" or _installed(b)]
    missing = [b for b in wanted if b not in backends]
    sizes = [_shape(s) for s in args.sizes.split(",")] if args.sizes else list(DEFAULT_SIZES)
    info = machine()
    print(f"machine: {machine_line(info)}")
    if missing:
        print(f"skipped (not installed): {', '.join(missing)}")
    print("times: median per call in ms; ratio = ours / theirs (< 1: mithril_losses faster)\n")
    print(format_table([]))
    cases = [(shape, name) for shape in sizes for name in losses if args.sizes or name not in LOSS_SIZES]
    cases += [(shape, name) for name in losses if not args.sizes and name in LOSS_SIZES for shape in LOSS_SIZES[name]]
    rows: list[Row] = []
    for shape, name in cases:
        large = int(np.prod(shape)) >= 100_000
        reps = args.reps or ((11 if large else 51) if args.quick else (21 if large else 201))
        rows += run_case(name, shape, args.dtype, backends, reps, args.warmup, log=print)
    print("\n" + format_table(rows))
    command = " ".join(["mithril-losses bench", *_rerun_args(argv)])
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": [asdict(r) for r in rows]}, indent=2)
                                   + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(rows, info, command=command), encoding="utf-8")
    if args.update_docs:
        update_markdown(Path(args.update_docs), "\n" + format_markdown(rows, info, command=command) + "\n")
        print(f"updated {args.update_docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
