"""The machine, the targets read off the measurements, and the terminal / Markdown / JSON outputs."""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cases import CASES_BY_KEY, shape_elements
from .runner import Row, installed

DOCS_PAGE = Path(__file__).resolve().parent.parent.parent / "docs" / "performance.md"
RESULTS_START, RESULTS_END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"
# a run on GPUs alone (`--devices cuda,gpu`, on a GPU machine) has its own section, beside a CPU run's
GPU_RESULTS_START, GPU_RESULTS_END = "<!-- bench-results-gpu:start -->", "<!-- bench-results-gpu:end -->"


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    """Where the numbers were taken."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            memory = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "usable_cpus": usable, "memory": memory,
            "python": platform.python_version(), "numpy": np.__version__}
    for module in ("torch", "jax", "mlx", "optax"):
        if installed(module):
            try:
                info[module] = getattr(importlib.import_module("mlx.core" if module == "mlx" else module),
                                       "__version__", "?")
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                info[module] = f"import failed: {err}"
    if "torch" in info and not str(info["torch"]).startswith("import failed"):
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_line(info: dict) -> str:
    libs = ", ".join(f"{k} {info[k]}" for k in ("numpy", "torch", "jax", "mlx", "optax") if k in info)
    memory = f", {info['memory']} RAM" if info.get("memory") else ""
    gpu = f", GPU: {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu'] or info['machine']}, {info['usable_cpus']} usable CPUs (nproc; of {info['cpu_count']})"
            f"{memory}{gpu}, {info['platform']}, Python {info['python']}; {libs}")


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One of issue 9's targets: the worst ``field`` over the selected rows must be at most ``limit``."""

    text: str
    field: str  # a Row attribute: ratio, overhead_us or memory_ratio
    limit: float
    backend: str
    mode: str
    loss: str | None = None  # None: every loss measured in this backend and mode
    theirs_prefix: str = ""


TARGETS = (
    Target("PyTorch eager cross_entropy, ours / F.cross_entropy + backward()", "ratio", 1.0, "torch", "eager",
           "cross_entropy"),
    Target("PyTorch eager mse, ours / F.mse_loss + backward()", "ratio", 1.0, "torch", "eager", "mse"),
    Target("jax.jit cross_entropy, ours / optax", "ratio", 1.15, "jax", "jit", "cross_entropy"),
    Target("jax.jit mse, ours / optax", "ratio", 1.15, "jax", "jit", "mse"),
    Target("jax.jit, worst loss", "ratio", 1.15, "jax", "jit"),
    Target("NumPy cross_entropy, ours / copy of the inputs", "ratio", 4.0, "numpy", "eager", "cross_entropy"),
    Target("NumPy mse, ours / copy of the inputs", "ratio", 3.0, "numpy", "eager", "mse"),
    *(Target(f"per-call overhead on 1k elements, {b}: ours - the formula in {b}'s operators", "overhead_us", 20.0,
             b, "per-call") for b in ("numpy", "torch", "jax", "mlx")),
    Target("linear_cross_entropy peak memory, ours / naive matmul + cross entropy", "memory_ratio", 0.25, "torch",
           "eager", "linear_cross_entropy", "naive"),
)


def device_group(device: str) -> str:
    return "CPU" if device == "cpu" else "GPU"


def _main_rows(rows):
    """Per loss, the rows at its main size (the first listed, full or quick), else at its largest measured."""
    by_loss = {}
    for r in rows:
        by_loss.setdefault(r.loss, []).append(r)
    chosen = []
    for loss, group in by_loss.items():
        case = CASES_BY_KEY.get(loss)
        main = {tuple(case.sizes[0]), tuple(case.quick_sizes[0])} if case else set()
        at_main = [r for r in group if tuple(r.shape) in main]
        largest = max(shape_elements(r.shape) for r in group)
        chosen += at_main or [r for r in group if shape_elements(r.shape) == largest]
    return chosen


def targets(rows) -> list[dict]:
    """Each target, per device group (CPU, GPU) that has rows, read off the measured rows: the worst value of
    the selected rows against the limit. ``met`` is None where nothing was measured."""
    out = []
    for group in sorted({device_group(r.device) for r in rows}):
        here = [r for r in rows if device_group(r.device) == group]
        sized = _main_rows([r for r in here if r.mode != "per-call"]) + [r for r in here if r.mode == "per-call"]
        for t in TARGETS:
            picked = [r for r in sized if r.backend == t.backend and r.mode == t.mode
                      and (t.loss is None or r.loss == t.loss) and r.theirs_label.startswith(t.theirs_prefix)
                      and getattr(r, t.field) is not None]
            worst = max(picked, key=lambda r: getattr(r, t.field), default=None)
            value = None if worst is None else getattr(worst, t.field)
            out.append({"target": t.text, "device": group, "unit": "us" if t.field == "overhead_us" else "ratio",
                        "limit": t.limit, "measured": value,
                        "met": None if value is None else value <= t.limit,
                        "row": None if worst is None else f"{worst.loss} {_shape_text(worst.shape)} "
                                                          f"{worst.backend}/{worst.device} {worst.mode}"})
    return out


# --------------------------------------------------------------------------- output


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _mib(v) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


def _number(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_row(r: Row) -> str:
    memory = f"{_mib(r.ours_peak_bytes)}/{_mib(r.theirs_peak_bytes)}"
    delta = f"{r.overhead_us:+.0f}" if r.mode == "per-call" and r.overhead_us is not None else ""
    tail = f"  [{r.error}]" if r.error else ""
    return (f"{r.loss:<22} {_shape_text(r.shape):<18} {r.backend + '/' + r.device:<10} {r.mode:<13} "
            f"{_ms(r.ours_ms):>8} {_ms(r.theirs_ms):>8} {_number(r.ratio):>6} {delta:>7} {memory:>13}  "
            f"{r.theirs_label}{tail}")


def format_table(rows) -> str:
    head = (f"{'loss':<22} {'shape':<18} {'backend':<10} {'mode':<13} {'ours ms':>8} {'their ms':>8} "
            f"{'ratio':>6} {'d us':>7} {'peak MiB o/t':>13}  theirs")
    return "\n".join([head, "-" * len(head)] + [format_row(r) for r in rows])


def _target_value(t: dict) -> str:
    if t["measured"] is None:
        return "-"
    return f"{t['measured']:.0f} us" if t["unit"] == "us" else f"{t['measured']:.2f}"


def format_targets(found: list[dict]) -> str:
    lines = []
    for t in found:
        status = {None: "not measured", True: "met", False: "NOT met"}[t["met"]]
        unit = " us" if t["unit"] == "us" else ""
        lines.append(f"[{t['device']}] {t['target']}: {_target_value(t)} (target <= {t['limit']:g}{unit}) {status}")
    return "\n".join(lines)


def format_markdown(rows, info: dict, *, command: str = "", notes=(), compile_backend: str = "") -> str:
    lines = [f"Measured on: {machine_line(info)}.", ""]
    if command:
        lines += [f"Command: `{command}`." + (f" torch.compile backend: `{compile_backend}`." if compile_backend
                                                 else ""), ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    found = targets(rows)
    for group in sorted({device_group(r.device) for r in rows}):
        lines += [f"### {group}", "", "| Target | Measured | Limit | Status | Row |", "|---|---:|---:|---|---|"]
        for t in (t for t in found if t["device"] == group):
            status = {None: "not measured", True: "met", False: "**not met**"}[t["met"]]
            limit = f"<= {t['limit']:g}" + (" us" if t["unit"] == "us" else "")
            lines.append(f"| {t['target']} | {_target_value(t)} | {limit} | {status} | {t['row'] or '-'} |")
        lines += ["", "| Loss | Shape | Backend | Mode | Ours (ms) | Theirs (ms) | Ours / theirs | Ours - theirs "
                      "per call (us) | Peak extra MiB, ours / theirs | Theirs |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
        for r in (r for r in rows if device_group(r.device) == group):
            ratio = "-" if r.ratio is None else f"**{r.ratio:.2f}**"
            delta = f"{r.overhead_us:+.0f}" if r.mode == "per-call" and r.overhead_us is not None else ""
            memory = (f"{_mib(r.ours_peak_bytes)} / {_mib(r.theirs_peak_bytes)}"
                      if r.memory_method else "-")
            theirs = r.theirs_label + (f" ({r.error})" if r.error else "")
            lines.append(f"| {r.loss} | `{_shape_text(r.shape)}` {r.dtype} | {r.backend}/{r.device} | {r.mode} | "
                         f"{_ms(r.ours_ms)} | {_ms(r.theirs_ms)} | {ratio} | {delta} | {memory} | "
                         f"{theirs.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def update_markdown(path: Path, body: str, *, gpu_only: bool = False) -> None:
    """Replace the results section of ``path`` (between the bench-results markers, or the GPU section's for a
    run on GPUs alone) with ``body``."""
    start, end = (GPU_RESULTS_START, GPU_RESULTS_END) if gpu_only else (RESULTS_START, RESULTS_END)
    text = path.read_text(encoding="utf-8")
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"{path}: markers {start} ... {end} not found.")
    path.write_text(text[: i + len(start)] + "\n" + body + text[j:], encoding="utf-8")
