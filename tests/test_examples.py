"""Every example runs to the end (exit 0) and prints its key line; examples of a missing framework are skipped."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# (script, extra arguments, modules it needs, a line it must print)
CASES = [
    ("quickstart.py", [], ["numpy"], "quickstart OK"),
    ("compiled_model_backward.py", [], ["torch"], "parameter gradients match torch's F.mse_loss + backward()"),
    ("compiled_model_backward.py", ["--compile"], ["torch"],
     "parameter gradients match torch's F.mse_loss + backward()"),
    ("jax_vjp.py", [], ["jax", "optax"], "parameter gradients match jax.grad of optax.losses.huber_loss"),
]


def _missing(modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


@pytest.mark.parametrize(("script", "args", "needs", "expected"), CASES,
                         ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_example_runs(script, args, needs, expected):
    missing = _missing(needs)
    if missing:
        pytest.skip(f"{script} needs {', '.join(missing)}")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert expected in proc.stdout, proc.stdout


def test_every_example_is_exercised():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {c[0] for c in CASES}


def test_bench_runs_quickly_without_timing_assertions(tmp_path):
    """The benchmark runs end to end on a tiny size (nothing here asserts a time)."""
    from mithril_losses import bench

    out = tmp_path / "bench.json"
    assert bench.main(["--losses", "mse", "--backends", "numpy", "--sizes", "16", "--reps", "2", "--warmup", "1",
                       "--json", str(out)]) == 0
    import json

    data = json.loads(out.read_text())
    assert data["results"] and data["results"][0]["loss"] == "mse" and "cpu_count" in data["machine"]
