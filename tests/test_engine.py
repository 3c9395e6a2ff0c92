"""End-to-end sweeps: the paper's headline, chunking, precision, infeasibility, netCDF."""

from pathlib import Path

import numpy as np
import pytest

import sweep
from sweep.dataset import write_netcdf

GRIDS = Path(__file__).resolve().parents[1] / "grids"

SMALL = """
name = "small"
[axes]
context = [1024, 8192, 65536]
gpu = ["h100-sxm", "b200", "l40s"]
model = ["llama-3.1-8b", "llama-3.1-70b", "qwen3-30b-a3b", "deepseek-v3"]
tp = [1, 8]
dtype = ["bf16", "fp8", "fp4"]
batch = ["saturated", 1, 64]
"""


@pytest.fixture(scope="module")
def small64():
    return sweep.run(SMALL, precision="float64")


# The 1/W Law (Chen et al. 2026, arXiv:2603.17280), abstract: "at 64K context an H100 holds 16
# sequences in flight, tok/W = 1.5; at 4K it holds 256, tok/W = 17.6" (MODEL.md section 1).
def test_paper_headline_points():
    ds = sweep.run(GRIDS / "paper.toml")
    h100 = ds.sel(gpu="h100")
    assert int(h100["concurrency"].sel(context=4096)) == 256
    assert round(float(h100["tok_per_watt"].sel(context=4096)), 1) == 17.6
    assert int(h100["concurrency"].sel(context=65536)) == 16
    assert round(float(h100["tok_per_watt"].sel(context=65536)), 2) == 1.50


def test_paper_law_in_calibrated_mode():
    """n_max * W is constant, so tok/W halves per doubling up to the power curve's drift."""
    ds = sweep.run(GRIDS / "paper.toml")
    tokw = ds["tok_per_watt"].sel(gpu="h100").values
    ratios = tokw[1:] / tokw[:-1]
    assert np.all(ratios < 0.62) and np.all(ratios > 0.45)
    conc = ds["concurrency"].sel(gpu="h100").values * ds["context"].values
    assert np.all(conc[2:] == conc[2])  # KV-block limited from 4K up: n * W constant


def test_dims_follow_spec_order_and_missing_axes_are_scalars():
    ds = sweep.run(
        {"name": "t", "axes": {"model": "llama-3.1-8b", "context": [4096, 8192], "gpu": "b200"}}
    )
    assert ds["tok_per_watt"].dims == ("model", "context", "gpu")
    assert ds.sizes == {"model": 1, "context": 2, "gpu": 1}
    assert ds["tp"].ndim == 0 and int(ds["tp"]) == 1
    assert str(ds["dtype"].values) == "bf16"
    assert int(ds["batch"]) == 0


def test_every_variable_is_described(small64):
    for name, var in {**small64.data_vars, **small64.coords}.items():
        assert var.attrs.get("long_name"), name
    for name in ("tok_per_watt", "throughput", "power", "iter_time", "kv_budget", "t_mem"):
        assert small64[name].attrs["units"], name
    assert small64.attrs["Conventions"].startswith("CF-")
    for key in ("spec", "jax_version", "backend", "device", "precision", "created"):
        assert small64.attrs[key], key
    assert small64["tok_per_watt"].shape == (3, 3, 4, 2, 3, 3)


def test_model_coordinates_carry_parameter_counts(small64):
    # MODEL.md "Check against published totals (within 2%)": Llama-3.1-70B 70.6B,
    # Qwen3-30B-A3B 30.5B / 3.3B, DeepSeek-V3 671B / 37B.
    total = small64["param_count"].to_series()
    active = small64["active_param_count"].to_series()
    assert total["llama-3.1-70b"] == pytest.approx(70.6e9, rel=0.02)
    assert total["qwen3-30b-a3b"] == pytest.approx(30.5e9, rel=0.02)
    assert active["qwen3-30b-a3b"] == pytest.approx(3.3e9, rel=0.02)
    assert total["deepseek-v3"] == pytest.approx(671e9, rel=0.02)
    assert active["deepseek-v3"] == pytest.approx(37e9, rel=0.02)


def test_infeasible_points_are_flagged_nan(small64):
    ds = small64
    # Hopper and Ada have no FP4
    fp4 = ds.sel(gpu=["h100-sxm", "l40s"], dtype="fp4")
    assert not fp4["feasible"].any() and fp4["tok_per_watt"].isnull().all()
    # DeepSeek-V3 (671B) in bf16 does not fit one 80 GB H100
    one = ds.sel(gpu="h100-sxm", model="deepseek-v3", tp=1, dtype="bf16")
    assert not one["feasible"].any()
    assert (one["kv_budget"] < 0).all()  # the reason stays visible
    # a fixed batch of 64 at 64K on one H100 with an 8B model exceeds B_max
    pt = ds.sel(gpu="h100-sxm", model="llama-3.1-8b", tp=1, dtype="bf16", context=65536)
    b_max = int(pt["concurrency_limit"].sel(batch=0))
    assert b_max < 64 and not bool(pt["feasible"].sel(batch=64))
    assert bool(pt["feasible"].sel(batch=1))
    # where feasible, every output is finite and positive
    ok = ds["feasible"].values
    for name in ("tok_per_watt", "throughput", "power", "iter_time", "energy_per_token"):
        v = ds[name].values
        assert np.all(np.isfinite(v[ok]) & (v[ok] > 0)), name
        assert np.all(np.isnan(v[~ok])), name
    assert 0.2 < ok.mean() < 0.9


def test_energy_per_token_is_inverse_of_tok_per_watt(small64):
    ok = small64["feasible"].values
    prod = (small64["energy_per_token"] * small64["tok_per_watt"]).values[ok]
    np.testing.assert_allclose(prod, 1.0, rtol=1e-12)


def test_chunked_equals_unchunked(small64):
    chunked = sweep.run(SMALL, precision="float64", chunk_size=97, progress=False)
    assert chunked.attrs["chunk_points"] == 97
    for name in small64.data_vars:
        np.testing.assert_array_equal(chunked[name].values, small64[name].values, err_msg=name)


def test_float32_run_is_float32_and_agrees(small64):
    ds32 = sweep.run(SMALL)
    assert ds32.attrs["precision"] == "float32"
    assert ds32["tok_per_watt"].dtype == np.float32
    ok = small64["feasible"].values & ds32["feasible"].values
    same = small64["concurrency"].values == ds32["concurrency"].values
    assert same[ok].mean() > 0.99
    np.testing.assert_allclose(
        ds32["tok_per_watt"].values[ok & same], small64["tok_per_watt"].values[ok & same], rtol=2e-5
    )


def test_netcdf_round_trip(small64, tmp_path):
    path = write_netcdf(small64, tmp_path / "small.nc")
    back = sweep.open(path).load()
    for name in small64.data_vars:
        np.testing.assert_array_equal(back[name].values, small64[name].values, err_msg=name)
        assert back[name].attrs["long_name"] == small64[name].attrs["long_name"]
    assert back["feasible"].dtype == bool
    assert list(back["gpu"].values) == list(small64["gpu"].values)
    assert back.attrs["spec"] == small64.attrs["spec"]
    back.close()
    assert [p.name for p in tmp_path.iterdir()] == ["small.nc"]


def test_concurrency_never_rises_with_context(small64):
    conc = small64["concurrency_limit"].transpose("context", ...).values
    assert np.all(np.diff(conc, axis=0) <= 0)


def test_bigger_memory_gpu_holds_more_sequences(small64):
    sat = small64.sel(batch=0, dtype="bf16", tp=8, model="llama-3.1-70b")
    assert np.all(sat["concurrency"].sel(gpu="b200") > sat["concurrency"].sel(gpu="h100-sxm"))
