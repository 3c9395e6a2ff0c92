"""sweep grad: autodiff elasticities against central finite differences, identities, the CLI."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sweep
from sweep import cli
from sweep.elasticity import allowed_wrt, elasticity_point_function, grad
from sweep.errors import SpecError
from sweep.modes import build_axes, point_function, scalar_inputs
from sweep.spec import load_spec
from tests.specs import FLAT_PROFILE

H = 1e-5  # step in ln(x) of the central differences

SLOW_GPU = """
[gpus.slow]
mem_bw = 3.35e12
mem_capacity = 80e9
flops_bf16 = 100e12
flops_fp8 = 200e12
flops_fp4 = 0
tdp = 700
power_idle = 300
power_nominal = 600
power_k = 1.0
power_x0 = 4.2
"""
ROOFLINE = (
    """
name = "grad-roofline"
precision = "float64"
[axes]
context = [2048, 8192, 32768]
gpu = ["h100-sxm", "b200", "l40s", "slow"]
model = ["llama-3.1-8b", "llama-3.1-70b", "qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v3"]
tp = [1, 8]
dtype = ["bf16", "fp8"]
batch = ["saturated", 8]
"""
    + SLOW_GPU
)
ACTIVITY = (
    """
name = "grad-activity"
precision = "float64"
[axes]
context = [2048, 8192, 32768]
gpu = ["h100-sxm", "slow"]
model = ["llama-3.1-8b", "qwen3-30b-a3b", "mixtral-8x7b"]
tp = [1, 4]
sparsity = [0.1, 0.3]
batch = ["saturated", 4, 64]
[params]
power = "activity"
expert_coverage = "active"
"""
    + SLOW_GPU
)
CALIBRATED = """
name = "grad-calibrated"
mode = "calibrated"
precision = "float64"
[axes]
context = [1024, 2000, 3000, 8192, 12000, 20000, 40000, 65536, 100000]
gpu = ["h100", "slots"]
batch = ["saturated", 4, 16]
[profiles.slots]
tp = 1
w_s = 0.01
h_s = 0.001
calib_ctx = 4096
max_slots = 32
kv_blocks = 65536
power_idle = 100.0
power_nominal = 250.0
power_k = 0.8
power_x0 = 3.0
"""
# Flat power: see tests/specs.py
FLAT = (
    """
name = "flat"
mode = "calibrated"
precision = "float64"
[axes]
context = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
gpu = ["flat"]
"""
    + FLAT_PROFILE
)


def raw_points(spec):
    """The raw inputs of every grid point (C order), as numpy arrays."""
    axes = build_axes(spec)
    shape = tuple(len(a) for a in axes)
    idx = np.indices(shape).reshape(len(shape), -1)
    raw = {k: np.full(idx.shape[1], v) for k, v in scalar_inputs(spec).items()}
    for axis, i in zip(axes, idx, strict=True):
        for k, v in axis.fields.items():
            raw[k] = np.asarray(v, dtype=float)[i]
    return raw


def relaxed(spec, prepared):
    _, kernel = point_function(spec, relaxed=True)
    return kernel({k: jnp.asarray(v) for k, v in prepared.items()})


def finite_differences(spec, names):
    """Central differences of ln(tok/W) of the relaxed model in ln(x), at every point."""
    prepare, _ = point_function(spec, relaxed=True)
    p = {k: np.asarray(v) for k, v in prepare(raw_points(spec)).items()}
    out = {}
    for k in names:
        up = relaxed(spec, {**p, k: p[k] * np.exp(H)})["tok_per_watt"]
        down = relaxed(spec, {**p, k: p[k] * np.exp(-H)})["tok_per_watt"]
        out[k] = np.asarray((jnp.log(up) - jnp.log(down)) / (2 * H))
    return p, out


def away_from_kinks(spec, p):
    """Points where the relaxed model is smooth within the finite-difference step."""
    o = {k: np.asarray(v) for k, v in relaxed(spec, p).items()}
    smooth = np.abs(o["concurrency"] - 1) > 1e-3  # log2(max(n, 1))
    if spec.mode == "roofline":
        smooth &= np.abs(o["t_mem"] - o["t_comp"]) > 1e-3 * np.maximum(o["t_mem"], o["t_comp"])
        if spec.params["power"] == "activity":
            kv_frac = o["kv_read"] / (o["streamed"] + o["kv_read"])
            smooth &= np.abs(kv_frac + o["t_comp"] / o["iter_time"] - 1) > 1e-3
    else:
        slots = p["max_slots"] * p["calib_ctx"]
        blocks = p["kv_blocks"] * p["blk"]
        smooth &= np.abs(slots - blocks) > 1e-3 * blocks
    return smooth


@pytest.mark.parametrize(
    "text", [ROOFLINE, ACTIVITY, CALIBRATED], ids=["logistic", "activity", "calibrated"]
)
def test_elasticities_match_central_differences(text):
    spec = load_spec(text)
    ds = grad(spec)
    names = allowed_wrt(spec)
    p, fd = finite_differences(spec, names)
    feasible = ds["feasible"].values.ravel()
    smooth = away_from_kinks(spec, p) & feasible
    assert smooth.sum() > 0.5 * feasible.sum() and feasible.sum() > 20
    for k in names:
        ad = ds[f"elasticity_{k}"].values.ravel()
        if k == "sparsity":
            moe = p["n_experts"] > 0
            assert np.isnan(ad[feasible & ~moe]).all()
            check = smooth & moe
        else:
            check = smooth
        assert check.sum() > 10, k
        np.testing.assert_allclose(ad[check], fd[k][check], rtol=1e-6, atol=1e-9, err_msg=k)
        assert np.isnan(ad[~feasible]).all(), k


def test_both_regimes_and_power_levers_are_exercised():
    spec = load_spec(ROOFLINE)
    ds = grad(spec, wrt="flops,mem_bw")
    ok = ds["feasible"].values
    flops, mem_bw = ds["elasticity_flops"].values[ok], ds["elasticity_mem_bw"].values[ok]
    assert (flops > 0.5).sum() > 10 and (mem_bw > 0.5).sum() > 10  # compute- and memory-bound
    assert list(ds.data_vars) == [
        "elasticity_flops",
        "elasticity_mem_bw",
        "tok_per_watt",
        "feasible",
    ]


@pytest.mark.parametrize("text", [ROOFLINE, CALIBRATED], ids=["roofline", "calibrated"])
def test_power_levels_elasticities_sum_to_minus_one(text):
    # P is linear homogeneous in (power_idle, power_nominal): their elasticities sum to -1
    ds = grad(text, wrt=["power_idle", "power_nominal"])
    total = (ds["elasticity_power_idle"] + ds["elasticity_power_nominal"]).values
    ok = ds["feasible"].values
    np.testing.assert_allclose(total[ok], -1.0, rtol=0, atol=1e-12)


def test_exact_model_outputs_match_sweep_run():
    for text in (ROOFLINE, CALIBRATED):
        ds, ref = grad(text, wrt="context"), sweep.run(text)
        np.testing.assert_array_equal(ds["feasible"].values, ref["feasible"].values)
        np.testing.assert_array_equal(ds["tok_per_watt"].values, ref["tok_per_watt"].values)
        assert ds["elasticity_context"].attrs["units"] == "1"
        assert "d ln(tok_per_watt) / d ln(context)" in ds["elasticity_context"].attrs["long_name"]


def test_context_elasticity_is_minus_one_with_flat_power():
    ds = grad(FLAT)
    np.testing.assert_allclose(ds["elasticity_context"].values, -1.0, rtol=0, atol=1e-9)
    # n_max = kv_blocks blk / W binds (max_slots calib_ctx = 2**21 > 2**20): slots do not matter;
    # tps = n / (w_s + c n) gives d ln(tps) / d ln(n) = w_s / t_iter = -elasticity_w_s
    e_kv, e_ws = ds["elasticity_kv_blocks"].values, ds["elasticity_w_s"].values
    np.testing.assert_allclose(e_kv, -e_ws, rtol=1e-9)
    assert 0.1 < e_kv.min()
    np.testing.assert_allclose(ds["elasticity_max_slots"].values, 0.0, atol=1e-12)


def test_context_elasticity_exactly_minus_one_at_zero_k_or_equal_power_levels():
    # the kernel itself, below the catalog's power_k > 0 and power_nominal > power_idle checks
    spec = load_spec(FLAT)
    fn = jax.vmap(elasticity_point_function(spec, ["context", "power_k", "power_x0"]))
    raw = {k: jnp.asarray(v) for k, v in raw_points(spec).items()}
    for flat in ({"power_k": 0.0}, {"power_nominal": 300.0}):
        out = fn({**raw, **{k: jnp.full_like(raw["context"], v) for k, v in flat.items()}})
        np.testing.assert_allclose(out["elasticity_context"], -1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(out["elasticity_power_x0"], 0.0, atol=1e-12)
    # with the logistic curve the power drifts with n, and the elasticity is not -1
    out = fn({**raw, "power_k": jnp.ones_like(raw["context"])})
    assert np.abs(np.asarray(out["elasticity_context"]) + 1).max() > 0.05


def test_float32_elasticities_are_good_to_1e_4():
    e32 = grad(ROOFLINE, precision="float32")
    e64 = grad(ROOFLINE)
    assert e32.attrs["precision"] == "float32"
    for name in e64.data_vars:
        if name.startswith("elasticity_"):
            a, b = e32[name].values.astype(float), e64[name].values
            assert e32[name].dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4, err_msg=name)


def test_unknown_wrt_names_the_field_and_allowed_names():
    with pytest.raises(SpecError) as err:
        grad(ROOFLINE, wrt="context,bogus")
    assert err.value.field == "wrt" and "bogus" in str(err.value) and "mem_bw" in str(err.value)
    with pytest.raises(SpecError, match="tdp"):
        grad(ROOFLINE, wrt="tdp")  # logistic power: tdp is not an input
    assert "tdp" in allowed_wrt(load_spec(ACTIVITY))
    assert "power_k" not in allowed_wrt(load_spec(ACTIVITY))
    assert set(allowed_wrt(load_spec(CALIBRATED))) == {
        "w_s", "h_s", "calib_ctx", "max_slots", "kv_blocks", "power_idle", "power_nominal",
        "power_k", "power_x0", "fill", "context",
    }  # fmt: skip


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cal.toml").write_text(CALIBRATED)
    return tmp_path


def test_cli_writes_default_output_and_ranks_levers(in_tmp, capsys):
    assert cli.main(["grad", "cal.toml", "--wrt", "context,power_nominal,w_s"]) == 0
    out = capsys.readouterr().out
    path = in_tmp / "outputs" / "grad-calibrated.grad.nc"
    assert path.is_file() and "wrote" in out
    assert "median |e|" in out and "per gpu" in out
    table = out.splitlines()
    h100 = next(line for line in table if line.startswith("h100 "))
    assert h100.split()[1] == "power_nominal" and h100.split()[3] == "context"
    with sweep.open(path) as ds:
        assert set(ds.data_vars) == {
            "elasticity_context", "elasticity_power_nominal", "elasticity_w_s",
            "tok_per_watt", "feasible",
        }  # fmt: skip


def test_cli_exit_codes(in_tmp, capsys):
    assert cli.main(["grad", "cal.toml", "--wrt", "mem_bw", "-o", "x.nc"]) == 2
    err = capsys.readouterr().err
    assert "wrt" in err and "kv_blocks" in err
    assert not Path("x.nc").exists() and not Path("outputs").exists()
    assert cli.main(["grad", "missing.toml"]) == 2


def test_roofline_context_elasticity_is_minus_one_when_kv_bound_with_flat_power():
    # saturated dense batch, memory-bound: B = kv_budget / (kv_tok W) and t_mem is constant
    text = (
        ROOFLINE.replace('name = "grad-roofline"', 'name = "flat-roofline"')
        .replace('gpu = ["h100-sxm", "b200", "l40s", "slow"]', 'gpu = ["flat"]')
        .replace('batch = ["saturated", 8]', 'batch = ["saturated"]')
        .replace("[gpus.slow]", "[gpus.flat]")
        .replace("power_k = 1.0", "power_k = 1e-12")
        .replace("flops_bf16 = 100e12", "flops_bf16 = 1000e12")
    )
    ds = grad(text, wrt="context,mem_bw,bw_eff,flops,flops_eff,t_layer")
    run = sweep.run(text)
    dense = run["model"].isin(["llama-3.1-8b", "llama-3.1-70b"])
    memory = (run["bound"] == 0) & dense
    e = ds["elasticity_context"].where(memory).values
    assert np.isfinite(e).sum() > 10
    # t_layer is constant in W too: only the power curve (flat here) could bend the law
    np.testing.assert_allclose(e[np.isfinite(e)], -1.0, rtol=0, atol=1e-9)
    compute = (run["bound"] == 1) & dense
    assert (ds["elasticity_context"].where(compute) > -0.99).sum() > 0
    # the two factors of each roof enter as a product
    np.testing.assert_allclose(ds["elasticity_mem_bw"], ds["elasticity_bw_eff"], rtol=1e-12)
    np.testing.assert_allclose(ds["elasticity_flops"], ds["elasticity_flops_eff"], rtol=1e-12)
