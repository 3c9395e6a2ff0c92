"""The JAX kernels against the plain-Python reference (tests/reference_model.py) at random points.

The reference is an independent, literal reading of MODEL.md; float64 agreement is to 1e-12.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.calibrated import INPUTS as CALIBRATED_INPUTS
from kernels.calibrated import calibrated_point
from kernels.model import MODEL_FIELDS, param_counts
from kernels.roofline import INPUTS, roofline_point
from tests import reference_model as ref

FLOAT_KEYS = (
    "concurrency",
    "iter_time",
    "throughput",
    "power",
    "tok_per_watt",
    "energy_per_token",
    "t_mem",
    "t_comp",
    "streamed",
    "kv_read",
)
DEPLOYMENT_KEYS = ("kv_budget", "weights_gpu", "kv_tok_gpu")


def random_model(rng):
    mla = rng.random() < 0.3
    moe = rng.random() < 0.5
    n_layers = int(rng.integers(2, 96))
    hidden = int(rng.choice([1024, 2048, 4096, 7168, 8192]))
    n_heads = int(rng.choice([16, 32, 64, 128]))
    m = dict.fromkeys(MODEL_FIELDS, 0)
    m.update(
        n_layers=n_layers,
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=int(rng.choice([1, 2, 4, 8, n_heads])),
        head_dim=int(rng.choice([64, 128])),
        intermediate=int(rng.integers(1, 30) * 1024),
        vocab=int(rng.choice([32000, 151936])),
        tied_embeddings=int(rng.random() < 0.3),
        n_dense_layers=n_layers,
        max_position=131072,
    )
    if moe:
        n_experts = int(rng.choice([8, 64, 128, 256]))
        m.update(
            n_experts=n_experts,
            experts_per_token=int(rng.integers(1, 9)),
            moe_intermediate=int(rng.integers(1, 16) * 256),
            n_shared_experts=int(rng.integers(0, 2)),
            n_dense_layers=min(int(rng.integers(0, 4)), n_layers - 1),
        )
    if mla:
        m.update(
            q_lora_rank=int(rng.choice([0, 1536])),
            kv_lora_rank=512,
            qk_nope_head_dim=128,
            qk_rope_head_dim=64,
            v_head_dim=128,
        )
    return m


def random_point(rng):
    p = random_model(rng)
    p.update(
        mem_bw=rng.uniform(0.5e12, 8e12),
        mem_capacity=rng.uniform(24e9, 300e9),
        flops=float(rng.choice([0.0, 1e15, 2e15, 9e15], p=[0.05, 0.45, 0.3, 0.2])),
        tdp=rng.uniform(300, 1400),
        w_bytes=float(rng.choice([0.5, 1.0, 2.0])),
        kv_bytes=float(rng.choice([1.0, 2.0])),
        tp=float(rng.choice([1, 2, 4, 8])),
        batch=float(rng.choice([0, 0, 1, 16, 256])),
        context=float(rng.integers(100, 200_000)),
        fill=rng.uniform(0.05, 1.0),
        blk=float(rng.choice([1, 16, 32])),
        mem_util=rng.uniform(0.5, 0.95),
        bw_eff=rng.uniform(0.5, 1.0),
        flops_eff=rng.uniform(0.3, 1.0),
        t_layer=rng.uniform(0, 1e-5),
        max_seqs=float(rng.choice([0, 0, 64])),
        context_limit=float(rng.choice([0, 1])),
        sparsity=rng.uniform(0.001, 1.0) if p["n_experts"] else 1.0,
    )
    p["power_idle"] = 0.43 * p["tdp"] * rng.uniform(0.8, 1.2)
    p["power_nominal"] = 0.86 * p["tdp"] * rng.uniform(0.9, 1.1)
    p["power_k"], p["power_x0"] = rng.uniform(0.5, 2), rng.uniform(2, 6)
    return {k: v if isinstance(v, int) else float(v) for k, v in p.items()}


def batched(points, keys, dtype=jnp.float64):
    return {k: jnp.asarray([p[k] for p in points], dtype=dtype) for k in keys}


def assert_matches_reference(got, want, feasible_mask, rtol):
    np.testing.assert_array_equal(np.asarray(got["feasible"]), feasible_mask)
    for key in FLOAT_KEYS:
        if key not in got:
            continue
        w = np.array([r[key] for r in want])
        np.testing.assert_allclose(np.asarray(got[key]), w, rtol=rtol, equal_nan=True, err_msg=key)


@pytest.mark.parametrize("coverage", ["independent", "active"])
@pytest.mark.parametrize("power", ["logistic", "activity"])
def test_roofline_matches_reference(coverage, power):
    rng = np.random.default_rng(20261204)
    points = [random_point(rng) for _ in range(400)]
    fn = jax.jit(jax.vmap(lambda p: roofline_point(p, expert_coverage=coverage, power=power)))
    got = fn(batched(points, INPUTS))
    want = [ref.roofline(p, expert_coverage=coverage, power=power) for p in points]
    feasible = np.array([r["feasible"] for r in want])
    assert 0.3 < feasible.mean() < 0.95, "the random points should exercise both outcomes"
    assert_matches_reference(got, want, feasible, rtol=1e-12)
    for key in DEPLOYMENT_KEYS:
        np.testing.assert_allclose(np.asarray(got[key]), [r[key] for r in want], rtol=1e-12)
    bound = np.asarray(got["bound"])
    want_bound = np.array([r["bound"] if r["feasible"] else -1 for r in want])
    np.testing.assert_array_equal(bound, want_bound)


def test_roofline_relaxed_matches_reference():
    rng = np.random.default_rng(7)
    points = [random_point(rng) for _ in range(300)]
    for p in points:
        p["batch"] = 0.0
    got = jax.vmap(lambda p: roofline_point(p, relaxed=True))(batched(points, INPUTS))
    want = [ref.roofline(p, relaxed=True) for p in points]
    ok = np.array([np.isfinite(r["tok_per_watt"]) and r["concurrency"] >= 1 for r in want])
    assert ok.sum() > 100
    for key in ("tok_per_watt", "concurrency", "t_mem", "t_comp"):
        g = np.asarray(got[key])[ok]
        np.testing.assert_allclose(g, np.array([r[key] for r in want])[ok], rtol=1e-12)


def test_param_counts_match_reference():
    rng = np.random.default_rng(3)
    models = [random_model(rng) for _ in range(200)]
    got = param_counts(batched(models, MODEL_FIELDS))
    want = [ref.param_counts(m) for m in models]
    for field in ("total", "expert", "dense", "input_table"):
        np.testing.assert_allclose(
            np.asarray(getattr(got, field)), [w[field] for w in want], rtol=1e-12, err_msg=field
        )


def test_calibrated_matches_reference():
    rng = np.random.default_rng(11)
    points = []
    for _ in range(400):
        points.append(
            dict(
                w_s=rng.uniform(1e-3, 2e-2),
                h_s=rng.uniform(1e-4, 1e-3),
                calib_ctx=8192.0,
                max_slots=float(rng.choice([64, 128, 256])),
                kv_blocks=float(rng.choice([32768, 65536])),
                blk=16.0,
                power_idle=rng.uniform(50, 300),
                power_nominal=rng.uniform(350, 700),
                power_k=rng.uniform(0.5, 1.5),
                power_x0=rng.uniform(2, 5),
                context=float(rng.integers(64, 2_000_000)),
                fill=rng.uniform(0.1, 1),
                batch=float(rng.choice([0, 0, 1, 8, 300])),
                max_seqs=float(rng.choice([0, 32])),
            )
        )
    got = jax.vmap(calibrated_point)(batched(points, CALIBRATED_INPUTS))
    want = [ref.calibrated(p) for p in points]
    feasible = np.array([r["feasible"] for r in want])
    assert 0.2 < feasible.mean() < 0.98
    assert_matches_reference(got, want, feasible, rtol=1e-12)


def test_float32_agrees_with_float64():
    """float32 kernels agree with float64 to a few float32 ulps, compounded over ~20 operations.

    Points sit away from floor/ceil boundaries (integer contexts, blk 16), where a one-ulp
    difference could move B_max by one sequence; the tolerance is 2e-5 relative.
    """
    rng = np.random.default_rng(5)
    points = [random_point(rng) for _ in range(300)]
    fn = jax.vmap(roofline_point)
    hi = fn(batched(points, INPUTS, jnp.float64))
    lo = fn(batched(points, INPUTS, jnp.float32))
    assert lo["tok_per_watt"].dtype == jnp.float32
    feasible = np.asarray(hi["feasible"])
    assert (np.asarray(lo["feasible"]) == feasible).mean() > 0.98
    same_b = np.asarray(hi["concurrency"]) == np.asarray(lo["concurrency"])
    assert same_b[feasible].mean() > 0.95
    ok = same_b & feasible
    np.testing.assert_allclose(
        np.asarray(lo["tok_per_watt"])[ok], np.asarray(hi["tok_per_watt"])[ok], rtol=2e-5
    )


def test_gradients_are_finite_at_dense_models():
    """(1 - f)**B with f = 1 (dense) must not put NaN into gradients (double-where guard)."""
    rng = np.random.default_rng(9)
    p = random_point(rng)
    p.update(
        n_experts=0.0,
        experts_per_token=0.0,
        moe_intermediate=0.0,
        sparsity=1.0,
        n_dense_layers=p["n_layers"],
        mem_capacity=300e9,
        flops=2e15,
        w_bytes=1.0,
    )

    def log_tokw(q):
        return jnp.log(roofline_point(q, relaxed=True)["tok_per_watt"])

    g = jax.grad(log_tokw)({k: jnp.float64(v) for k, v in p.items()})
    assert all(np.isfinite(float(v)) for v in g.values())
