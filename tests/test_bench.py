"""The benchmark runs, reports every field, compares like with like, and reads its targets off the
measurements. No timed assertions: times are measured here, never judged."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import bench
from mithril_losses.bench import cases, report, runner

from conftest import installed

ROW_FIELDS = {f.name for f in dataclasses.fields(runner.Row)}
TARGET_FIELDS = {"target", "device", "unit", "limit", "measured", "met", "row"}


def _run(tmp_path, *args):
    out = tmp_path / "bench.json"
    assert bench.main([*args, "--reps", "2", "--warmup", "1", "--json", str(out),
                       "--markdown", str(tmp_path / "bench.md")]) == 0
    return json.loads(out.read_text(encoding="utf-8")), (tmp_path / "bench.md").read_text(encoding="utf-8")


def test_a_tiny_run_reports_every_field_and_its_ratios_are_its_medians(tmp_path):
    data, markdown = _run(tmp_path, "--losses", "mse,cross_entropy", "--sizes", "8x5", "--backends", "numpy",
                          "--modes", "eager,per-call")
    assert set(data) == {"machine", "devices", "torch_compile_backend", "command", "notes", "results", "targets"}
    assert data["devices"] == {"numpy": ["cpu"]}
    assert {"cpu", "usable_cpus", "python", "numpy"} <= set(data["machine"])
    assert {(r["loss"], r["mode"]) for r in data["results"]} == {
        ("mse", "eager"), ("mse", "per-call"), ("cross_entropy", "eager"), ("cross_entropy", "per-call")}
    for r in data["results"]:
        assert set(r) == ROW_FIELDS and r["error"] == ""
        assert len(r["ours_all_ms"]) == len(r["theirs_all_ms"]) == r["reps"] == 2
        assert r["ours_ms"] == pytest.approx(float(np.median(r["ours_all_ms"])))
        assert r["ratio"] == pytest.approx(r["ours_ms"] / r["theirs_ms"])
        assert r["overhead_us"] == pytest.approx((r["ours_ms"] - r["theirs_ms"]) * 1e3)
        if r["mode"] == "eager":  # tracemalloc sees NumPy's allocations: at least the two copies / gradients
            assert r["memory_method"] == "tracemalloc" and r["theirs_peak_bytes"] >= 8 * 5 * 4
            assert r["memory_ratio"] == pytest.approx(r["ours_peak_bytes"] / r["theirs_peak_bytes"])
    assert all(set(t) == TARGET_FIELDS for t in data["targets"])
    assert data["targets"] == report.targets([runner.Row(**{**r, "shape": tuple(r["shape"])})
                                              for r in data["results"]])
    assert "### CPU" in markdown and "| Target |" in markdown and "memory floor (copy of the inputs)" in markdown


@pytest.mark.parametrize("backend,modes", [("torch", "eager,per-call"), ("jax", "jit,per-call"),
                                           ("mlx", "eager,mx.compile,per-call")])
def test_each_framework_pair_runs_on_a_tiny_size(tmp_path, backend, modes):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    data, _ = _run(tmp_path, "--losses", "mse", "--sizes", "6x4", "--backends", backend, "--modes", modes,
                   "--devices", "cpu")
    assert {r["mode"] for r in data["results"]} == set(modes.split(","))
    for r in data["results"]:
        assert r["error"] == "" and r["backend"] == backend and r["device"] == "cpu"
        assert r["ours_ms"] > 0 and r["theirs_ms"] > 0
    timed = [r for r in data["results"] if r["mode"] != "per-call"]
    assert all(r["ours_peak_bytes"] is not None and r["theirs_peak_bytes"] is not None for r in timed)


def test_a_loss_that_is_not_registered_is_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    registered = [n for n in mlo.available() if n != "linear_cross_entropy"]
    monkeypatch.setattr(mlo, "available", lambda family=None: registered)
    data, markdown = _run(tmp_path, "--losses", "linear_cross_entropy", "--backends", "numpy")
    assert data["results"] == []
    assert data["notes"] == ["linear_cross_entropy: skipped, `linear_cross_entropy` is not registered in this version"]
    assert "not registered" in capsys.readouterr().out and "not registered" in markdown


def test_given_sizes_go_to_the_losses_of_their_rank():
    by_key = cases.CASES_BY_KEY
    given = [(8, 5), (10, 4, 3), (7,)]
    assert bench._sizes(by_key["mse"], given, quick=False) == given
    assert bench._sizes(by_key["cross_entropy"], given, quick=False) == [(8, 5)]
    assert bench._sizes(by_key["ctc"], given, quick=False) == [(10, 4, 3)]
    assert bench._sizes(by_key["cross_entropy"], None, quick=True) == list(by_key["cross_entropy"].quick_sizes)


def _row(loss, backend, mode, shape=(4096, 1000), device="cpu", ours=1.0, theirs=1.0, theirs_label="theirs",
         ours_peak=None, theirs_peak=None):
    return runner.Row(loss, shape, "float32", backend, device, mode, "ours", theirs_label, ours, theirs,
                      ours / theirs, (ours - theirs) * 1e3, ours_peak, theirs_peak,
                      None if ours_peak is None else ours_peak / theirs_peak, "m" if ours_peak else "", 3)


def test_the_targets_are_read_off_the_rows():
    rows = [
        _row("cross_entropy", "torch", "eager", ours=0.9),
        _row("cross_entropy", "torch", "eager", shape=(256, 32000), ours=5.0),  # not the main size: not read
        _row("mse", "torch", "eager", ours=1.2),
        _row("mse", "jax", "jit", ours=1.1),
        _row("huber", "jax", "jit", ours=1.3),
        _row("cross_entropy", "numpy", "eager", ours=3.5),
        _row("mse", "numpy", "per-call", shape=(1000,), ours=0.030, theirs=0.005),
        _row("cross_entropy", "numpy", "per-call", shape=(1, 1000), ours=0.040, theirs=0.030),
        _row("linear_cross_entropy", "torch", "eager", shape=(4096, 1024, 32000), theirs_label="naive matmul",
             ours_peak=100, theirs_peak=1000),
        _row("linear_cross_entropy", "torch", "eager", shape=(4096, 1024, 32000), theirs_label="F.linear_ce",
             ours_peak=100, theirs_peak=100),
        _row("mse", "torch", "eager", device="cuda", ours=0.5),
    ]
    found = {(t["device"], t["target"]): t for t in report.targets(rows)}

    def get(device, backend, mode, loss=None):
        target = next(t for t in report.TARGETS if (t.backend, t.mode, t.loss) == (backend, mode, loss))
        return found[(device, target.text)]

    assert get("CPU", "torch", "eager", "cross_entropy")["measured"] == pytest.approx(0.9)
    assert get("CPU", "torch", "eager", "cross_entropy")["met"] is True
    assert get("CPU", "torch", "eager", "mse")["met"] is False
    assert get("CPU", "jax", "jit", "mse")["measured"] == pytest.approx(1.1) and get("CPU", "jax", "jit", "mse")["met"]
    assert get("CPU", "jax", "jit")["measured"] == pytest.approx(1.3) and get("CPU", "jax", "jit")["row"].startswith(
        "huber")
    assert get("CPU", "numpy", "eager", "cross_entropy")["met"] is True
    unmeasured = get("CPU", "numpy", "eager", "mse")
    assert unmeasured["measured"] is None and unmeasured["met"] is None
    overhead = get("CPU", "numpy", "per-call")
    assert overhead["measured"] == pytest.approx(25.0) and overhead["met"] is False and overhead["unit"] == "us"
    assert get("CPU", "torch", "per-call")["met"] is None
    assert get("CPU", "torch", "eager", "linear_cross_entropy")["measured"] == pytest.approx(0.1)
    assert get("GPU", "torch", "eager", "mse")["measured"] == pytest.approx(0.5)
    assert get("GPU", "torch", "eager", "cross_entropy")["met"] is None


def test_update_markdown_replaces_only_the_results_section(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text(f"intro\n{report.RESULTS_START}\nold\n{report.RESULTS_END}\nreading\n", encoding="utf-8")
    report.update_markdown(page, "\nnew\n")
    assert page.read_text(encoding="utf-8") == f"intro\n{report.RESULTS_START}\n\nnew\n{report.RESULTS_END}\nreading\n"


def test_update_markdown_puts_a_gpu_only_run_in_the_gpu_section(tmp_path):
    page = tmp_path / "performance.md"
    cpu = f"{report.RESULTS_START}\ncpu\n{report.RESULTS_END}\n"
    page.write_text(f"{cpu}{report.GPU_RESULTS_START}\nold\n{report.GPU_RESULTS_END}\n", encoding="utf-8")
    report.update_markdown(page, "\ngpu\n", gpu_only=True)
    assert page.read_text(encoding="utf-8") == \
        f"{cpu}{report.GPU_RESULTS_START}\n\ngpu\n{report.GPU_RESULTS_END}\n"
    page.write_text(cpu, encoding="utf-8")
    with pytest.raises(SystemExit, match="bench-results-gpu"):
        report.update_markdown(page, "x", gpu_only=True)


# --------------------------------------------------------------------------- like with like

_SMALL = {2: (6, 5), 3: (12, 3, 5), None: (6, 5)}


def _small_inputs(case):
    return case.make(_SMALL[case.rank], "float64", np.random.default_rng(1))


def _registered(case):
    if case.loss not in mlo.available():
        pytest.skip(f"{case.loss} is not registered")
    return mlo.get(case.loss, **case.options)


@pytest.mark.parametrize("case", cases.CASES, ids=lambda c: c.key)
def test_each_torch_reference_computes_our_value(case):
    torch = pytest.importorskip("torch")
    loss = _registered(case)
    inputs = _small_inputs(case)
    ours = float(loss(**inputs))
    for label, build in case.torch:
        theirs = build(torch)(**{n: torch.from_numpy(a) for n, a in inputs.items()})
        assert float(theirs) == pytest.approx(ours, rel=1e-6), label


@pytest.mark.parametrize("case", [c for c in cases.CASES if c.jax], ids=lambda c: c.key)
def test_each_jax_reference_computes_our_value(case):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    loss = _registered(case)
    inputs = _small_inputs(case)
    label, build = case.jax[0]
    theirs = build(jax, jax.numpy, optax)(**{n: jax.numpy.asarray(a) for n, a in inputs.items()})
    # float32 unless the session enabled x64; optax's triplet puts eps inside the norm, torch beside it
    assert float(theirs) == pytest.approx(float(loss(**inputs)), rel=1e-4), label


@pytest.mark.parametrize("case", [c for c in cases.CASES if c.mlx], ids=lambda c: c.key)
def test_each_mlx_reference_computes_our_value(case):
    mx = pytest.importorskip("mlx.core")
    nn = pytest.importorskip("mlx.nn")
    loss = _registered(case)
    inputs = _small_inputs(case)
    label, build = case.mlx[0]
    theirs = build(mx, nn)(**{n: mx.array(a.astype(np.float32) if a.dtype == np.float64 else a)
                              for n, a in inputs.items()})
    assert theirs.item() == pytest.approx(float(loss(**inputs)), rel=1e-4), label


@pytest.mark.parametrize("case", [c for c in cases.CASES if c.raw], ids=lambda c: c.key)
@pytest.mark.parametrize("backend", runner.BACKENDS)
def test_each_raw_expression_computes_our_value_and_gradient(case, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    loss = mlo.get(case.loss, **case.options)
    inputs = case.make((4, 250), "float32", np.random.default_rng(2))
    value, grads = loss.value_and_grad(**inputs)
    convert = {"numpy": lambda a: a, "torch": lambda a: __import__("torch").from_numpy(a),
               "jax": lambda a: __import__("jax").numpy.asarray(a),
               "mlx": lambda a: __import__("mlx.core").core.array(a)}[backend]
    raw_value, raw_grads = case.raw[backend](1000)(**{n: convert(a) for n, a in inputs.items()})
    assert float(raw_value) == pytest.approx(float(value), rel=1e-5)
    assert set(raw_grads) == set(grads)
    for name, g in raw_grads.items():
        np.testing.assert_allclose(np.asarray(g), grads[name], rtol=1e-5, atol=1e-8)
