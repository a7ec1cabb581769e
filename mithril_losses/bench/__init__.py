"""Benchmarks: ``value_and_grad`` of mithril_losses against each framework's own loss + autodiff.

``mithril-losses bench`` (or ``python benchmarks/run.py``). For each hot loss and several sizes, on every
installed backend and every device it sees, in one run, with the two sides of each comparison timed
alternately (so a slow moment of the machine hits both):

- NumPy: ``loss.value_and_grad`` against the memory floor, a copy of the inputs;
- PyTorch: eager against the ``torch.nn.functional`` loss and ``backward()``; ``torch.compile`` of our loss
  (through its ``autograd.Function``) + ``backward()`` against ``torch.compile`` of the ``F.*`` loss + ``backward()``;
- JAX: ``jax.jit`` of ``loss.value_and_grad`` against ``jax.jit(jax.value_and_grad(...))`` of the optax /
  ``jax.nn`` formulation;
- MLX: against ``mx.value_and_grad`` of the ``mlx.nn.losses`` function, eager and under ``mx.compile``;
- ``mlo.compile(loss)`` against the framework's compiled loss, where the package has ``mlo.compile``;
- per call on 1k elements: ours against the same formula written directly in the backend's operators;
- peak extra memory of one call of each side.

Each time is the median over the repetitions; the ratio is ours / theirs (below 1: mithril_losses is faster).
Nothing here asserts a time. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import mithril_losses as mlo

from .cases import CASES, CASES_BY_KEY, Case, shape_elements
from .report import (DOCS_PAGE, device_group, format_markdown, format_row, format_table, format_targets, machine,
                     machine_line, targets, update_markdown)
from .runner import BACKENDS, MODES, Row, discover_devices, installed, run_case, torch_compile_backend

__all__ = ["CASES", "Case", "Row", "build_parser", "main", "run_case", "targets"]

QUICK_REPS, FULL_REPS = (5, 51), (21, 201)  # (large inputs, small inputs)
QUICK_LIMIT, FULL_LIMIT = 60.0, 600.0  # seconds a first call (compiles included) may take


def _csv(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def _shape(text: str) -> tuple:
    return tuple(int(n) for n in text.lower().replace("(", "").replace(")", "").split("x") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mithril-losses bench", description=__doc__.splitlines()[0])
    parser.add_argument("--losses", type=_csv, help="comma-separated cases (default: all): "
                                                    + ", ".join(c.key for c in CASES))
    parser.add_argument("--backends", type=_csv, help=f"comma-separated (default: those installed of "
                                                      f"{','.join(BACKENDS)})")
    parser.add_argument("--devices", type=_csv, help="comma-separated, e.g. cpu or cuda,gpu (default: every "
                                                     "device each backend sees)")
    parser.add_argument("--modes", type=_csv, help=f"comma-separated (default: all of {','.join(MODES)})")
    parser.add_argument("--sizes", type=_csv, help="comma-separated shapes like 4096x1000,1000 (default: each "
                                                   "loss's own); a loss runs the given sizes of its rank")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--reps", type=int, help="timed repetitions per side (default 21 for large inputs, 201 "
                                                 "for small; --quick: 5 and 51)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--limit", type=float, help="seconds a side's first call may take before it is reported "
                                                    "as too slow (default 600; --quick: 60)")
    parser.add_argument("--quick", action="store_true", help="main sizes only, fewer repetitions, torch.compile "
                                                             "of cross_entropy only (~1-2 min on 2 cores)")
    parser.add_argument("--json", metavar="PATH", help="write the machine, the results and the targets as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the results as Markdown tables")
    parser.add_argument("--update-docs", metavar="PATH", nargs="?", const=str(DOCS_PAGE),
                        help="replace the results section of this Markdown file (default: the checkout's "
                             "docs/performance.md); a run on GPUs alone replaces its GPU section")
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


def _cases(names, parser) -> list[Case]:
    if not names:
        return list(CASES)
    unknown = [n for n in names if n not in CASES_BY_KEY]
    if unknown:
        parser.error(f"unknown losses {unknown}; choose from {list(CASES_BY_KEY)}")
    return [CASES_BY_KEY[n] for n in names]


def _sizes(case: Case, given, quick: bool) -> list[tuple]:
    if given is None:
        return list(case.quick_sizes if quick else case.sizes)
    return [s for s in given if case.rank is None or len(s) == case.rank]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [b for b in args.backends or () if b not in BACKENDS] + [m for m in args.modes or () if m not in MODES]
    if unknown:
        parser.error(f"unknown backends or modes {unknown}; choose from {list(BACKENDS)} and {list(MODES)}")
    wanted = args.backends or list(BACKENDS)
    backends = [b for b in wanted if b == "numpy" or installed(b)]
    devices = {b: [d for d in found if not args.devices or d in args.devices]
               for b, found in discover_devices(backends).items()}
    modes = args.modes or list(MODES)
    given = [_shape(s) for s in args.sizes] if args.sizes else None
    ctx = {"quick": args.quick, "torch_compile_backend": torch_compile_backend()}
    info = machine()
    notes = [f"not installed: {', '.join(b for b in wanted if b not in backends)}"] if backends != wanted else []
    plan = []
    for case in _cases(args.losses, parser):
        if case.loss not in mlo.available():
            notes.append(f"{case.key}: skipped, `{case.loss}` is not registered in this version")
            continue
        sizes = _sizes(case, given, args.quick)
        if not sizes:
            notes.append(f"{case.key}: skipped, no size of rank {case.rank} in --sizes")
        plan += [(case, size) for size in sizes]
    print(f"machine: {machine_line(info)}")
    print(f"devices: {devices}; torch.compile backend: {ctx['torch_compile_backend']}")
    for note in notes:
        print(f"note: {note}")
    print("times: median per call in ms; ratio = ours / theirs (< 1: mithril_losses faster); "
          "d us = ours - theirs per call (per-call mode); peak MiB = peak extra memory of one call, ours/theirs\n")
    print(format_table([]))
    rows: list[Row] = []
    large, small = QUICK_REPS if args.quick else FULL_REPS
    limit = args.limit if args.limit is not None else QUICK_LIMIT if args.quick else FULL_LIMIT
    with warnings.catch_warnings():
        # dynamo's notes on tracing through our Python-side helpers (lru_cache) repeat for every compile
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._dynamo")
        for case, size in plan:
            reps = args.reps or max(3, round((large if shape_elements(size) >= 100_000 else small) * case.reps_scale))
            rows += run_case(case, size, args.dtype, devices, modes, reps, args.warmup, ctx=ctx, limit=limit,
                             log=lambda r: print(format_row(r), flush=True))
    found = targets(rows)
    print("\n" + format_table(rows) + "\n\ntargets:\n" + format_targets(found))
    command = " ".join(["mithril-losses bench", *_rerun_args(argv)])
    markdown = format_markdown(rows, info, command=command, notes=notes,
                               compile_backend=ctx["torch_compile_backend"])
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "devices": devices, "torch_compile_backend": ctx["torch_compile_backend"],
             "command": command, "notes": notes, "results": [asdict(r) for r in rows], "targets": found},
            indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.update_docs:
        gpu_only = bool(rows) and all(device_group(r.device) == "GPU" for r in rows)
        update_markdown(Path(args.update_docs), "\n" + markdown + "\n", gpu_only=gpu_only)
        print(f"updated {args.update_docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
