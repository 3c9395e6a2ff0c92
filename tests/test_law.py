"""sweep law: slopes, fit quality, law ranges and causes per slice; the file and the CLI."""

import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sweep
from sweep import cli
from sweep.dataset import write_netcdf
from sweep.errors import SpecError
from sweep.law_fit import CAUSES, fit, law, law_range
from tests.specs import FLAT_PROFILE

ROOT = Path(__file__).resolve().parents[1]
POW2 = "[1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]"
FLAT = (
    f"""
name = "flat"
mode = "calibrated"
precision = "float64"
[axes]
context = {POW2}
gpu = ["flat", "h100"]
"""
    + FLAT_PROFILE
)
# A GPU with a tenth of an H100's FLOP/s: compute-bound at short contexts
SLOW = f"""
name = "slow"
precision = "float64"
[axes]
context = {POW2}
gpu = ["slow"]
model = ["llama-3.1-8b"]
tp = [8]
[gpus.slow]
mem_bw = 3.35e12
mem_capacity = 80e9
flops_bf16 = 100e12
flops_fp8 = 0
flops_fp4 = 0
tdp = 700
power_idle = 300
power_nominal = 600
power_k = 1.0
power_x0 = 4.2
"""
CAPPED = f"""
name = "capped"
precision = "float64"
[axes]
context = {POW2}
gpu = ["h100-sxm"]
model = ["llama-3.1-8b"]
[params]
max_seqs = 16
"""


def code(name):
    return CAUSES.index(name)


def test_flat_power_calibrated_law_is_exact():
    r = law(FLAT).sel(gpu="flat")
    assert float(r["slope"]) == pytest.approx(-1.0, abs=1e-9)
    assert float(r["r2"]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(r["local_slope"].values, -1.0, atol=1e-9)
    assert float(r["law_from"]) == 1024 and float(r["law_to"]) == 131072
    assert float(r["law_ratio"]) == 128 and int(r["points"]) == 8
    assert int(r["cause"]) == code("law") and (r["local_cause"].values == 0).all()


def test_paper_grid_slope_near_minus_one():
    r = law(ROOT / "grids" / "paper.toml")
    h100 = r.sel(gpu="h100")
    # the logistic power drifts down at small batches (long contexts): slope a little above -1
    assert -1.0 < float(h100["slope"]) < -0.88
    assert float(h100["r2"]) > 0.99
    assert (r["r2"] > 0.99).all()
    assert float(h100["law_from"]) == 1024 and float(h100["law_ratio"]) >= 16
    # where it bends at the longest contexts it is the power curve leaving its plateau
    bent = h100["local_cause"].values
    assert (bent[-2:] == code("power")).all() and (bent[:4] == code("law")).all()


def test_compute_bound_short_contexts_report_compute():
    ds = sweep.run(SLOW)
    r = law(ds).squeeze()
    assert int(r["cause"]) == code("compute")
    local = r["local_cause"].values
    assert (local[:3] == code("compute")).all()
    assert (ds["bound"].squeeze().values[:3] == 1).all()  # compute-bound at 1K-4K
    assert float(r["slope"]) > -0.8


def test_max_seqs_cap_reports_cap():
    r = law(CAPPED).squeeze()
    assert int(r["cause"]) == code("cap")
    assert (r["local_cause"].values[:4] == code("cap")).all()
    assert float(r["law_ratio"]) < 16 or np.isnan(float(r["law_ratio"]))


def test_dims_coordinates_and_metadata():
    ds = sweep.run(ROOT / "grids" / "roofline-law.toml")
    r = law(ds)
    assert r["slope"].dims == ("gpu", "model", "tp", "dtype")
    assert r["local_slope"].dims == ("context_interval", "gpu", "model", "tp", "dtype")
    ctx = ds["context"].values
    np.testing.assert_array_equal(r["context_lower"].values, ctx[:-1])
    np.testing.assert_array_equal(r["context_upper"].values, ctx[1:])
    np.testing.assert_allclose(r["context_interval"].values, np.sqrt(ctx[:-1] * ctx[1:]))
    assert "gpu_name" in r.coords and "context" not in r.coords
    assert r["cause"].dtype == np.int8
    assert r["cause"].attrs["flag_meanings"] == " ".join(CAUSES)
    np.testing.assert_array_equal(r["cause"].attrs["flag_values"], np.arange(len(CAUSES)))
    assert r.attrs["law_over"] == "context" and r.attrs["spec_name"] == "roofline-law"
    # the slope is the least-squares slope of each slice
    y = np.log2(ds["tok_per_watt"].isel(gpu=1).squeeze().values)
    assert float(r["slope"].isel(gpu=1).squeeze()) == pytest.approx(
        np.polyfit(np.log2(ctx), y, 1)[0], rel=1e-12
    )
    local = np.diff(y) / np.diff(np.log2(ctx))
    np.testing.assert_allclose(r["local_slope"].isel(gpu=1).squeeze().values, local, rtol=1e-12)


def test_fit_and_law_range_on_hand_made_slices():
    x = np.log2([1.0, 2, 4, 8, 16, 32])
    ly = np.array(
        [
            [0, -1, -2, -3, -4, -5],  # the law everywhere
            [np.nan, 0, np.nan, np.nan, np.nan, np.nan],  # one point
            [5, 5, 4, 3, 3, 2],  # two runs of one interval each... and one of two
        ],
        dtype=float,
    )
    slope, r2, n = fit(x, ly)
    assert slope[0] == pytest.approx(-1) and r2[0] == pytest.approx(1)
    assert np.isnan(slope[1]) and np.isnan(r2[1]) and n.tolist() == [6, 1, 6]
    good = np.abs(np.diff(ly, axis=-1) + 1) < 0.1
    lo, hi = law_range(x, good)
    assert lo.tolist() == [0, -1, 1] and hi.tolist() == [5, -1, 3]


def test_law_file_round_trip(tmp_path):
    r = law(ROOT / "grids" / "paper.toml")
    path = write_netcdf(r, tmp_path / "paper.law.nc")
    with xr.open_dataset(path) as back:
        for name in r.data_vars:
            np.testing.assert_array_equal(back[name].values, r[name].values)
            assert back[name].dtype == r[name].dtype
        assert back["cause"].attrs["flag_meanings"] == r["cause"].attrs["flag_meanings"]
        assert back.attrs["law_var"] == "tok_per_watt"
        np.testing.assert_array_equal(back["context_lower"].values, r["context_lower"].values)


def test_bad_over_and_var():
    ds = sweep.run(ROOT / "grids" / "paper.toml")
    with pytest.raises(SpecError) as err:
        law(ds, over="tp")
    assert err.value.field == "over"
    with pytest.raises(SpecError) as err:
        law(ds, var="nope")
    assert err.value.field == "var" and "tok_per_watt" in str(err.value)


def test_a_million_points_take_seconds():
    # synthetic: 48 contexts x 21,000 slices, every cause path exercised
    rng = np.random.default_rng(0)
    ctx = np.geomspace(1024, 131072, 48).round()
    shape = (48, 30, 700)
    n = np.floor(4e6 / ctx[:, None, None] * rng.uniform(0.5, 2, shape[1:]))
    dims = ("context", "a", "b")
    ds = xr.Dataset(
        {
            "tok_per_watt": (dims, n / rng.uniform(1, 1.2, shape)),
            "concurrency": (dims, n),
            "iter_time": (dims, rng.uniform(1, 1.2, shape)),
            "power": (dims, np.ones(shape)),
            "feasible": (dims, rng.uniform(size=shape) > 0.1),
            "bound": (dims, (rng.uniform(size=shape) > 0.5).astype(np.int8)),
        },
        coords={"context": ctx, "batch": 0},
    )
    t0 = time.perf_counter()
    r = law(ds)
    assert time.perf_counter() - t0 < 10
    assert r["slope"].shape == (30, 700) and r["local_cause"].shape == (47, 30, 700)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flat.toml").write_text(FLAT)
    return tmp_path


def test_cli_beside_the_input_and_summary(in_tmp, capsys):
    assert cli.main(["run", "flat.toml", "-o", "data/flat.nc", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["law", "data/flat.nc"]) == 0
    out = capsys.readouterr().out
    assert (in_tmp / "data" / "flat.law.nc").is_file()
    assert "2 slices" in out and "over >= 16x" in out and "100.0%" in out
    assert "slope quantiles" in out and "cause per slice: law 2" in out
    # a spec is run first; its law goes to outputs/<name>.law.nc
    assert cli.main(["law", "flat.toml"]) == 0
    assert (in_tmp / "outputs" / "flat.law.nc").is_file()
    assert cli.main(["law", "flat.toml", "-o", "x/y.nc"]) == 0
    assert (in_tmp / "x" / "y.nc").is_file()


def test_cli_exit_codes(in_tmp, capsys):
    assert cli.main(["law", "missing.nc"]) == 2
    assert cli.main(["law", "missing.toml"]) == 2
    assert cli.main(["law", "flat.toml", "--over", "gpu", "-o", "z.nc"]) == 2
    assert "over" in capsys.readouterr().err
    assert not Path("z.nc").exists()
