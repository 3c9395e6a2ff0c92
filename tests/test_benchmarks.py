"""Smoke tests of benchmarks/: the numpy baseline equals the JAX kernels, bench.py runs at
tiny sizes and writes the documented keys. No timing is asserted anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bench, numpy_model
from kernels.calibrated import INPUTS as CAL_INPUTS
from kernels.calibrated import calibrated_point
from kernels.roofline import INPUTS, roofline_point
from sweep import catalog
from sweep.engine import evaluate
from sweep.modes import build_problem, model_fields
from sweep.spec import load_spec

README = Path(__file__).resolve().parents[1] / "benchmarks" / "README.md"
RTOL = 1e-12  # float64, as the kernels are checked against tests/reference_model.py


def random_roofline_points(n: int, seed: int) -> dict[str, np.ndarray]:
    """Catalog models (with tied embeddings and full-rank MLA queries flipped at random) on
    random GPUs and operating points, so that every branch of the formulas is taken."""
    rng = np.random.default_rng(seed)
    models = [model_fields(m) for m in catalog.load_models().values()]
    rows = []
    for _ in range(n):
        p = dict(models[rng.integers(len(models))])
        if rng.random() < 0.3:
            p["tied_embeddings"] = 1.0 - p["tied_embeddings"]
        if p["kv_lora_rank"] > 0 and rng.random() < 0.3:
            p["q_lora_rank"] = 0.0
        tdp = rng.uniform(300, 1400)
        p.update(
            mem_bw=rng.uniform(0.5e12, 8e12),
            mem_capacity=rng.uniform(24e9, 300e9),
            flops=float(rng.choice([0.0, 1e15, 2e15, 9e15], p=[0.05, 0.45, 0.3, 0.2])),
            tdp=tdp,
            power_idle=0.43 * tdp * rng.uniform(0.8, 1.2),
            power_nominal=0.86 * tdp * rng.uniform(0.9, 1.1),
            power_k=rng.uniform(0.5, 2),
            power_x0=rng.uniform(2, 6),
            w_bytes=float(rng.choice([0.5, 1.0, 2.0])),
            kv_bytes=float(rng.choice([1.0, 2.0])),
            tp=float(rng.choice([1, 2, 4, 8])),
            batch=float(rng.choice([0, 0, 1, 16, 256, 100_000])),
            context=float(np.rint(np.exp(rng.uniform(0.0, np.log(2e6))))),  # log-uniform
            fill=rng.uniform(0.05, 1.0),
            blk=float(rng.choice([1, 16, 32])),
            mem_util=rng.uniform(0.5, 0.95),
            bw_eff=rng.uniform(0.5, 1.0),
            flops_eff=rng.uniform(0.3, 1.0),
            t_layer=rng.uniform(0, 1e-5),
            max_seqs=float(rng.choice([0, 0, 64])),
            context_limit=float(rng.choice([0, 1])),
            sparsity=rng.uniform(1e-3, 1.0) if p["n_experts"] else 1.0,
        )
        rows.append(p)
    return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in INPUTS}


def random_calibrated_points(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = {
        "w_s": rng.uniform(1e-3, 2e-2, n),
        "h_s": rng.uniform(1e-4, 1e-3, n),
        "calib_ctx": np.full(n, 8192.0),
        "max_slots": rng.choice([64.0, 128.0, 256.0], n),
        "kv_blocks": rng.choice([32768.0, 65536.0], n),
        "blk": rng.choice([1.0, 16.0], n),
        "power_idle": rng.uniform(50, 300, n),
        "power_nominal": rng.uniform(350, 700, n),
        "power_k": rng.uniform(0.5, 1.5, n),
        "power_x0": rng.uniform(2, 5, n),
        "context": rng.integers(1, 3_000_000, n).astype(float),
        "fill": rng.uniform(0.01, 1, n),
        "batch": rng.choice([0.0, 0.0, 1.0, 8.0, 300.0], n),
        "max_seqs": rng.choice([0.0, 0.0, 32.0], n),
    }
    assert set(p) == set(CAL_INPUTS)
    return p


def assert_same(got: dict, want: dict, rtol: float = RTOL):
    assert set(got) <= set(want), set(got) - set(want)
    for key, g in got.items():
        g, w = np.asarray(g), np.asarray(want[key])
        assert g.dtype == w.dtype, (key, g.dtype, w.dtype)
        if g.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=key)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=0, equal_nan=True, err_msg=key)
        else:
            np.testing.assert_array_equal(g, w, err_msg=key)


@pytest.mark.parametrize("relaxed", [False, True])
@pytest.mark.parametrize("coverage", ["independent", "active"])
@pytest.mark.parametrize("power", ["logistic", "activity"])
def test_numpy_roofline_equals_jax_kernel(coverage, power, relaxed):
    seed = 1 + 4 * (coverage == "active") + 2 * (power == "activity") + relaxed
    p = random_roofline_points(2000, seed=seed)
    fn = jax.vmap(
        lambda q: roofline_point(q, expert_coverage=coverage, power=power, relaxed=relaxed)
    )
    got = jax.jit(fn)({k: jnp.asarray(v) for k, v in p.items()})
    want = numpy_model.roofline(p, expert_coverage=coverage, power=power, relaxed=relaxed)
    feasible = np.asarray(got["feasible"])
    if not relaxed:
        assert 0.2 < feasible.mean() < 0.95, "both outcomes should be exercised"
    assert_same(got, want)


@pytest.mark.parametrize("relaxed", [False, True])
def test_numpy_calibrated_equals_jax_kernel(relaxed):
    p = random_calibrated_points(2000, seed=5)
    got = jax.jit(jax.vmap(lambda q: calibrated_point(q, relaxed=relaxed)))(
        {k: jnp.asarray(v) for k, v in p.items()}
    )
    assert_same(got, numpy_model.calibrated(p, relaxed=relaxed))


@pytest.mark.parametrize("mode", ["roofline", "calibrated"])
def test_numpy_gather_equals_engine(mode):
    """The numpy copy of the engine's chunk work (unravel, gathers, prepare) over a grid."""
    if mode == "roofline":
        spec = bench.roofline_spec(3000, "float64")
        spec["axes"]["sparsity"] = [0.01, 1.0]
    else:
        spec = {"mode": "calibrated", "precision": "float64",
                "axes": {"context": [1024, 65536, 1 << 20], "gpu": ["h100", "a10g"],
                         "batch": ["saturated", 1, 300]}}  # fmt: skip
    problem = build_problem(load_spec(spec))
    got = evaluate(problem)
    want = numpy_model.evaluate_points(problem, np.arange(problem.size), mode=mode)
    assert_same({k: v.ravel() for k, v in got.items()}, want)


def test_roofline_spec_sizes_are_close_and_valid():
    for target in (10**4, 10**5, 10**6, 10**7):
        spec = load_spec(bench.roofline_spec(target))
        assert abs(spec.size / target - 1) < 0.1, (target, spec.size)
    assert load_spec(bench.roofline_spec(10)).size >= 1


def test_bench_runs_at_tiny_sizes_and_writes_documented_keys(tmp_path):
    argv = ["--sizes", "300,3000", "--precisions", "float32,float64", "--out", str(tmp_path)]
    # 3000 points: above --whole-max (chunked kernel) and --e2e-max (end-to-end skipped)
    argv += ["--whole-max", "1000", "--kernel-chunk", "1024", "--e2e-max", "1000"]
    argv += ["--cli-sizes", "300", "--python-points", "100", "--repeat-seconds", "0"]
    argv += ["--mem-bw", "1e10"]  # skips the host copy-bandwidth measurement
    report = bench.main(argv)
    assert (tmp_path / "bench.png").stat().st_size > 0
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["schema"] == bench.SCHEMA
    assert [r["points"] for r in on_disk["results"]] == [r["points"] for r in report["results"]]
    for key in bench.TOP_KEYS:
        assert key in on_disk, key
    assert len(on_disk["results"]) == 4
    for row in on_disk["results"]:
        for key in bench.RESULT_KEYS:
            assert key in row, key
        for key in bench.KERNEL_KEYS:
            assert key in row["kernel"], key
        assert row["python"]["extrapolated"] is True
        assert row["kernel"]["points_per_s"] > 0 and row["numpy"]["points_per_s"] > 0
        check = row["check"]["numpy_vs_kernel"]
        assert check["nan_pattern_mismatches"] == 0 and check["int_bool_mismatches"] == 0
        if row["precision"] == "float64":
            assert check["max_rel_diff"] < RTOL
        assert row["python"]["vs_numpy_float64"]["tok_per_watt_max_rel_diff"] < RTOL
        assert row["python"]["vs_numpy_float64"]["feasible_pattern_equal"]
    small = [r for r in on_disk["results"] if r["size"] == 300]
    big = [r for r in on_disk["results"] if r["size"] == 3000]
    for row in small:
        assert row["kernel"]["chunks"] == 1
        assert row["sweep_run"]["points_per_s"] > 0
        assert row["cli"]["returncode"] == 0, row["cli"].get("stderr_tail")
        assert row["cli"]["netcdf_bytes"] > 0
    for row in big:
        assert row["kernel"]["chunks"] == 3
        assert "skipped" in row["sweep_run"]
        assert row["cli"] is None
    assert not list(tmp_path.glob("*.nc")), "the CLI's netCDF files are removed"


def test_readme_documents_every_key():
    text = README.read_text()
    keys = bench.TOP_KEYS + bench.RESULT_KEYS + bench.KERNEL_KEYS
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, missing
