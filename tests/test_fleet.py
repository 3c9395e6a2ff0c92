"""Fleet routing (kernels/fleet.py, sweep/fleet_sizing.py) against the plain-Python reference.

The reference (tests/fleet_reference.py) shares nothing with the JAX code but the model's
definition: per-GPU physics from tests/reference_model.py, pool moments by looping over CDF
segments, Erlang B by its recursion, integer sizing by trying replica counts one by one.
"""

import itertools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sweep  # noqa: F401  (float64)
from kernels import fleet as kfleet
from kernels.model import MODEL_FIELDS
from kernels.queueing import mgc_wait_quantile
from sweep import catalog, cli
from sweep.engine import gather_inputs
from sweep.errors import SpecError
from sweep.fleet_sizing import (
    build_problem,
    fleet,
    fleet_grad,
    gains,
    is_fleet_spec,
    load_fleet_spec,
    plot_gain,
    summarise,
)
from sweep.workload import load_preset
from tests import fleet_reference as ref

ROOT = Path(__file__).resolve().parents[1]

ROOFLINE = """
name = "fleet-test"
mode = "fleet"
[workload]
preset = "agent"
[axes]
b_short = [4096, 16384, 131072]
w_long = [65536, 131072]
arrival_rate = [0.5, 20.0]
slo = [0.05, 1.0]
gpu_short = ["h100-sxm", "b200"]
gpu_long = ["h100-sxm", "b200"]
model = ["llama-3.1-70b"]
tp = [8]
"""

# Few slots per GPU (max_seqs) and a slow prefill: the SLO binds, waits are > 0.
CALIBRATED = """
name = "fleet-cal"
mode = "fleet"
pool_mode = "calibrated"
[workload]
preset = "rag"
[params]
max_seqs = 6
prefill_chunk = 256
[axes]
b_short = [4096, 8192]
w_long = [32768, 65536]
arrival_rate = [0.02, 0.2, 2.0]
slo = [0.2, 5.0]
gpu_short = ["h100", "a100"]
gpu_long = ["h100"]
"""


# ---------------------------------------------------------------------------- helpers
def roofline_inputs(gpu_key, model_key="llama-3.1-70b", tp=8):
    """tests.reference_model.roofline's inputs for a catalog GPU and model, bf16, defaults."""
    g = catalog.load_gpus()[gpu_key]
    m = catalog.load_models()[model_key]
    p = {k: int(getattr(m, k)) for k in MODEL_FIELDS}
    p.update(
        mem_bw=g.mem_bw,
        mem_capacity=g.mem_capacity,
        tdp=g.tdp,
        power_idle=g.power_idle,
        power_nominal=g.power_nominal,
        power_k=g.power_k,
        power_x0=g.power_x0,
        flops=g.flops_bf16,
        tp=tp,
        w_bytes=2.0,
        kv_bytes=2.0,
        fill=0.5,
        blk=16,
        mem_util=0.9,
        bw_eff=0.8,
        flops_eff=0.8,
        t_layer=3e-6,
        max_seqs=0,
        context_limit=1,
        sparsity=m.experts_per_token / m.n_experts if m.n_experts else 1.0,
    )
    return p


def calibrated_inputs(key, max_seqs=6, chunk=256):
    pr = catalog.load_profiles()[key]
    p = {
        f: getattr(pr, f)
        for f in (
            "w_s",
            "h_s",
            "calib_ctx",
            "max_slots",
            "kv_blocks",
            "blk",
            "power_idle",
            "power_nominal",
            "power_k",
            "power_x0",
        )
    }
    p.update(fill=0.5, max_seqs=max_seqs, prefill_chunk=chunk)
    return p


def workload_tuple(name):
    w = load_preset(name)
    return list(w.tokens), list(w.cdf), w.output_share


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


COMPARED = (
    "fleet_tok_per_watt",
    "homogeneous_tok_per_watt",
    "gain",
    "p99_ttft_short",
    "p99_ttft_long",
    "share_short",
    "rejected_share",
    "output_rate",
)
COUNTS = ("gpus_short", "gpus_long", "gpus_homogeneous")


def check_point(d, r):
    assert bool(d["feasible"]) == r["feasible"]
    for k in COUNTS:
        assert float(d[k]) == r[k], k
    for k in COMPARED:
        a, b = float(d[k]), float(r[k])
        if math.isnan(b):
            assert math.isnan(a), k
        else:
            assert rel(a, b) < 1e-11, (k, a, b)


@pytest.fixture(scope="module")
def roofline_full():
    return fleet(ROOFLINE)


@pytest.fixture(scope="module")
def roofline_ds(roofline_full):
    return roofline_full.squeeze()


@pytest.fixture(scope="module")
def calibrated_ds():
    return fleet(CALIBRATED).squeeze()


# ---------------------------------------------------------------------------- reference
def test_roofline_matches_reference(roofline_ds):
    ds = roofline_ds
    wl = workload_tuple("agent")
    gpus = {k: ref.roofline_gpu(roofline_inputs(k)) for k in ("h100-sxm", "b200")}
    for gs, gl, b, w, lam, slo in itertools.product(
        ("h100-sxm", "b200"),
        ("h100-sxm", "b200"),
        (4096, 16384, 131072),
        (65536, 131072),
        (0.5, 20.0),
        (0.05, 1.0),
    ):
        d = ds.sel(gpu_short=gs, gpu_long=gl, b_short=b, w_long=w, arrival_rate=lam, slo=slo)
        r = ref.fleet(gpus[gs], gpus[gl], b, w, lam, wl, slo)
        if b > w:
            assert not bool(d["feasible"]) and not r["feasible"]
            assert np.isnan(float(d["fleet_tok_per_watt"]))
            continue
        check_point(d, r)


def test_calibrated_matches_reference_where_the_slo_binds(calibrated_ds):
    ds = calibrated_ds
    wl = workload_tuple("rag")
    gpus = {k: ref.calibrated_gpu(calibrated_inputs(k)) for k in ("h100", "a100")}
    waits = []
    for gs, b, w, lam, slo in itertools.product(
        ("h100", "a100"), (4096, 8192), (32768, 65536), (0.02, 0.2, 2.0), (0.2, 5.0)
    ):
        d = ds.sel(gpu_short=gs, b_short=b, w_long=w, arrival_rate=lam, slo=slo)
        r = ref.fleet(gpus[gs], gpus["h100"], b, w, lam, wl, slo)
        check_point(d, r)
        waits += [r["pools"][p].get("p99_wait", 0.0) for p in ("short", "long", "homogeneous")]
        for p in ("short", "long", "homogeneous"):
            pool = r["pools"][p]
            if pool["gpus"]:
                assert rel(float(d[f"p99_wait_{p}"]), pool["p99_wait"]) < 1e-9
                assert rel(float(d[f"util_{p}"]), pool["util"]) < 1e-12
                assert rel(float(d[f"power_{p}"]), pool["power"]) < 1e-12
    assert sum(w > 0 for w in waits) >= 10  # the SLO, not utilisation, sized these pools


# ---------------------------------------------------------------------------- sizing
def _wait_ref(c, a, s, scv, q=0.99):
    return ref.wait_quantile(c, a, s, scv, q, ref.ErlangB(a)(c))


SIZING_CASES = [
    (8192.0, 0.0, 8192.0, 2.0, 0.5),
    (65536.0, 8192.0, 65536.0, 2.0, 5.0),
    (65536.0, 0.0, 65536.0, 0.2, 0.2),
    (16384.0, 0.0, 16384.0, 5.0, 2.0),
    (32768.0, 4096.0, 32768.0, 3.0, 10.0),
    (65536.0, 0.0, 65536.0, 4.0, 0.05),
]


def test_sized_pools_meet_slo_and_one_replica_fewer_does_not():
    w = load_preset("rag")
    inputs = {k: jnp.asarray(float(v)) for k, v in calibrated_inputs("h100").items()}

    def one(case):
        window, lo, hi, rate, slo = case
        gpu = kfleet.calibrated_gpu(inputs)
        args = (w.tokens, w.cdf, w.output_share, slo, 0.99, 0.85)
        return kfleet.serve_pool(gpu, window, lo, hi, rate, *args)

    outs = jax.jit(jax.vmap(one))(jnp.asarray(SIZING_CASES))
    several = 0
    for i, (_, _, _, _, slo) in enumerate(SIZING_CASES):
        out = {k: float(v[i]) for k, v in outs.items()}
        slots, r = int(out["slots"]), int(out["replicas"])
        a, s, scv = out["load"], out["service_time"], out["scv"]
        assert r >= 1 and out["servers"] == r * slots
        assert a / (r * slots) <= 0.85
        assert _wait_ref(r * slots, a, s, scv) <= slo
        assert float(mgc_wait_quantile(r * slots, a, s, scv)) <= slo
        assert rel(out["p99_wait"], _wait_ref(r * slots, a, s, scv)) < 1e-9
        if r > 1:
            several += 1
            c = (r - 1) * slots
            assert a / c > 0.85 or _wait_ref(c, a, s, scv) > slo
    assert several >= 3


def test_gain_is_one_at_b_short_equal_w_long(roofline_ds):
    ds = roofline_ds.sel(b_short=131072, w_long=131072)
    for g in ("h100-sxm", "b200"):
        d = ds.sel(gpu_short=g, gpu_long=g)
        assert np.all(d["gain"].values == 1.0)
        assert np.all(d["gpus_long"].values == 0)
        assert np.all(d["gpus_short"].values == d["gpus_homogeneous"].values)
        assert np.all(np.isnan(d["p99_ttft_long"].values))


def test_b_short_above_w_long_is_infeasible(roofline_ds):
    d = roofline_ds.sel(b_short=131072, w_long=65536)
    assert not d["feasible"].values.any()
    assert np.isnan(d["fleet_tok_per_watt"].values).all()
    assert np.isfinite(d["homogeneous_tok_per_watt"].values).all()


def test_requests_beyond_w_long_are_rejected(roofline_ds):
    w = load_preset("agent")
    got = roofline_ds["rejected_share"].sel(w_long=65536).values
    assert np.allclose(got, 1.0 - w.cdf_at(65536.0), rtol=0, atol=1e-14)
    assert 0.04 < float(got.ravel()[0]) < 0.06
    assert np.all(roofline_ds["rejected_share"].sel(w_long=131072).values == 0)


def test_best_b_short_is_the_argmax(roofline_ds):
    ds = roofline_ds
    tokw = ds["fleet_tok_per_watt"].transpose("b_short", ...)
    vals = np.where(np.isnan(tokw.values), -np.inf, tokw.values)
    idx = vals.argmax(axis=0)
    expect = ds["b_short"].values[idx].astype(float)
    got = ds["best_b_short"].transpose(*tokw.dims[1:]).values
    assert np.array_equal(got, expect)
    best_gain = np.take_along_axis(ds["gain"].transpose("b_short", ...).values, idx[None], axis=0)[
        0
    ]
    assert np.array_equal(ds["best_gain"].transpose(*tokw.dims[1:]).values, best_gain)


# ---------------------------------------------------------------------------- gradients
def _relaxed_perturbed(spec, wrt, h):
    """Relaxed fleet tok/W at every grid point, unperturbed and with each x in wrt scaled by
    (1 + h) and (1 - h): one vmapped, jitted call (one compilation)."""
    pr = build_problem(spec, relaxed=True)
    tables = tuple(
        {k: jnp.asarray(np.asarray(v, dtype=np.float64)) for k, v in a.fields.items()}
        for a in pr.axes
    )
    constants = {k: jnp.asarray(v, dtype=np.float64) for k, v in pr.constants.items()}
    raw = gather_inputs(pr, tables, constants, jnp.arange(pr.size))
    batches = [raw] + [{**raw, x: raw[x] * (1 + s * h)} for x in wrt for s in (1, -1)]
    stacked = {k: jnp.concatenate([b[k] for b in batches]) for k in raw}
    out = jax.jit(jax.vmap(pr.point_fn))(stacked)["fleet_tok_per_watt"]
    return np.asarray(out).reshape(len(batches), *pr.shape)


@pytest.mark.parametrize("text", [CALIBRATED, ROOFLINE], ids=["calibrated", "roofline"])
def test_gradients_match_central_differences(text):
    spec = load_fleet_spec(text.replace("b_short = [4096, 16384, 131072]", "b_short = [6000]"))
    wrt = ("b_short", "w_long", "arrival_rate", "slo")
    g = fleet_grad(spec, wrt=wrt)
    h = 1e-6
    values = _relaxed_perturbed(spec, wrt, h)
    base = values[0]
    got = g["fleet_tok_per_watt"].values.reshape(base.shape)
    assert np.allclose(got, base, rtol=1e-13, atol=0)
    for i, x in enumerate(wrt):
        up, dn = values[1 + 2 * i], values[2 + 2 * i]
        fd = (np.log(up) - np.log(dn)) / (math.log1p(h) - math.log1p(-h))
        el = g[f"elasticity_{x}"].values.reshape(fd.shape)
        assert np.isfinite(el).all(), x
        assert np.allclose(el, fd, rtol=1e-5, atol=1e-7), (x, np.max(np.abs(el - fd)))


# ---------------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda t: t + "\nbogus = 1\n", "bogus"),
        (lambda t: t.replace("[axes]", "[axes]\ncontext = [4096]"), "axes.context"),
        (lambda t: t.replace('"h100-sxm", "b200"]\ngpu_long', '"h100"]\ngpu_long'), "gpu_short"),
        (lambda t: t.replace('preset = "agent"', 'cdf = "missing.json"'), "workload.cdf"),
        (lambda t: t.replace('preset = "agent"', 'preset = "nope"'), "workload.preset"),
        (lambda t: t.replace('mode = "fleet"', 'mode = "roofline"'), "mode"),
        (lambda t: t.replace("arrival_rate = [0.5, 20.0]", "arrival_rate = [-1]"), "arrival"),
        (lambda t: t.replace("slo = [0.05, 1.0]", "slo = []"), "axes.slo"),
        (lambda t: t.replace("tp = [8]", "tp = [8]\n[params]\nquantile = 1.5"), "quantile"),
        (lambda t: t.replace("tp = [8]", 'tp = [8]\n[prices]\n"h200x" = 2.0'), "prices"),
        (lambda t: t.replace("tp = [8]", 'tp = [8]\n[summary]\nupgrade = "a100-sxm"'), "summary"),
        (lambda t: t.replace('model = ["llama-3.1-70b"]\n', ""), "axes.model"),
        (lambda t: t.replace('mode = "fleet"', 'mode = "fleet"\npool_mode = "x"'), "pool_mode"),
    ],
)
def test_spec_errors_name_the_field(edit, field):
    with pytest.raises(SpecError) as err:
        load_fleet_spec(edit(ROOFLINE))
    assert field in str(err.value)


def test_bad_workload_file_names_file_and_line(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps([[100, 0.5], [50, 1.0]]))
    (tmp_path / "f.toml").write_text(ROOFLINE.replace('preset = "agent"', 'cdf = "w.json"'))
    with pytest.raises(SpecError) as err:
        load_fleet_spec(tmp_path / "f.toml")
    assert "w.json" in str(err.value) and "workload.cdf" in str(err.value)


def test_fleet_specs_are_refused_by_sweep_run_and_recognised():
    from sweep.spec import load_spec

    with pytest.raises(SpecError):
        load_spec(ROOFLINE)
    assert is_fleet_spec(ROOFLINE) and is_fleet_spec(load_fleet_spec(ROOFLINE))
    assert not is_fleet_spec(ROOT / "grids" / "paper.toml")


def test_no_prices_no_cost(roofline_ds):
    assert np.isnan(roofline_ds["cost_per_mtok"].values).all()
    assert np.isnan(roofline_ds["price_per_hour_short"].values).all()


def test_ranges_workload_axis_and_prices():
    text = """
    name = "r"
    mode = "fleet"
    [workloads.chat]
    preset = "chat"
    [workloads.wide]
    kind = "lognormal"
    median = 3000
    sigma = 1.2
    max = 65536
    [axes]
    b_short = {start = 2048, stop = 16384, num = 4}
    w_long = [65536]
    arrival_rate = [50.0]
    slo = [1.0]
    gpu_short = ["h100-sxm"]
    gpu_long = ["h100-sxm"]
    model = ["llama-3.1-70b"]
    tp = [8]
    [prices]
    "h100-sxm" = 3.0
    """
    ds = fleet(text)
    assert list(ds["b_short"].values) == [2048, 4096, 8192, 16384]
    assert list(ds["workload"].values) == ["chat", "wide"]
    assert ds["best_gain"].dims[-1] == "workload"
    d = ds.isel(b_short=1, workload=0).squeeze()
    usd_per_s = (float(d["gpus_short"]) + float(d["gpus_long"])) * 3.0 / 3600
    assert rel(float(d["cost_per_mtok"]), usd_per_s / float(d["output_rate"]) * 1e6) < 1e-12


def test_every_variable_has_units_and_long_name(roofline_ds, tmp_path):
    from sweep.dataset import write_netcdf

    for name, var in roofline_ds.data_vars.items():
        assert "units" in var.attrs and "long_name" in var.attrs, name
    assert roofline_ds.attrs["Conventions"] == "CF-1.13"
    assert roofline_ds.attrs["pool_mode"] == "roofline"
    path = write_netcdf(roofline_ds, tmp_path / "f.nc")
    back = sweep.open(path)
    assert float(back["gain"].max()) == float(roofline_ds["gain"].max())
    back.close()


# ---------------------------------------------------------------------------- summary, CLI
def test_summary_states_routing_generation_and_their_product(roofline_full):
    text = summarise(roofline_full)
    for phrase in ("routing gain", "GPU generation gain", "combined", "combined / product"):
        assert phrase in text
    g = gains(roofline_full, "h100-sxm", "b200")
    assert np.allclose(g["ratio"], g["routing_upgrade"] / g["routing_baseline"], rtol=1e-12)


def test_cli_writes_dataset_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.toml").write_text(CALIBRATED)
    assert cli.main(["fleet", "f.toml", "-o", "out.nc", "--plot", "-q"]) == 0
    out = capsys.readouterr().out
    assert "routing gain" in out and "wrote out.nc" in out
    assert (tmp_path / "out.nc").is_file() and (tmp_path / "out.png").stat().st_size > 10_000


def test_cli_bad_spec_exits_2_without_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text(ROOFLINE.replace('"b200"]\nmodel', '"b2000"]\nmodel'))
    assert cli.main(["fleet", "bad.toml", "-o", "bad.nc"]) == 2
    err = capsys.readouterr().err
    assert "axes.gpu_long[1]" in err and "b200" in err
    assert not (tmp_path / "bad.nc").exists() and not (tmp_path / "outputs").exists()


def test_sweep_grad_dispatches_fleet_specs(tmp_path, monkeypatch, capsys):
    from sweep import fleet_sizing

    calls = []
    monkeypatch.setattr(fleet_sizing, "fleet_grad", lambda *a, **k: calls.append((a, k)) or "ds")
    assert sweep.grad(CALIBRATED, wrt="slo") == "ds" and calls[0][0][1] == "slo"
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.toml").write_text(CALIBRATED)
    assert cli.main(["grad", "f.toml", "--wrt", "b_short,slo", "-o", "g.nc", "-q"]) == 0
    out = capsys.readouterr().out
    assert "elasticity_b_short" in out and "elasticity_slo" in out and "wrote g.nc" in out
    with sweep.open(tmp_path / "g.nc") as ds:
        assert set(ds.data_vars) >= {"elasticity_b_short", "elasticity_slo", "fleet_tok_per_watt"}
        assert ds["elasticity_slo"].attrs["units"] == "1"
    with pytest.raises(SpecError, match="wrt"):
        fleet_grad(CALIBRATED, wrt="context")


def test_plot_gain(roofline_full, tmp_path):
    path = plot_gain(roofline_full, tmp_path / "g.png")
    assert path.stat().st_size > 10_000


def test_shipped_grids_load():
    spec = load_fleet_spec(ROOT / "grids" / "fleet.toml")
    assert spec.size >= 360 and set(spec.axes["gpu_long"]) == {"h100-sxm", "b200"}
    assert spec.baseline == "h100-sxm" and spec.upgrade == "b200"
    for path in sorted((ROOT / "grids").glob("fleet*.toml")):
        assert is_fleet_spec(path) and load_fleet_spec(path).size > 0


# ---------------------------------------------------------------------------- scale
def test_thousands_of_points_run():
    text = ROOFLINE.replace(
        "b_short = [4096, 16384, 131072]", "b_short = {start = 1024, stop = 65536, num = 16}"
    ).replace("arrival_rate = [0.5, 20.0]", "arrival_rate = [0.5, 2, 5, 10, 20, 50, 100, 500]")
    spec = load_fleet_spec(text.replace("slo = [0.05, 1.0]", "slo = [0.25, 0.5, 1.0, 2.0]"))
    t0 = time.perf_counter()
    ds = fleet(spec)
    seconds = time.perf_counter() - t0
    n = ds["gain"].size
    print(f"\nfleet sweep: {n} points in {seconds:.2f} s ({n / seconds:,.0f} points/s)")
    assert n == 16 * 2 * 8 * 4 * 4 and np.isfinite(ds["homogeneous_tok_per_watt"].values).all()
    assert ds["feasible"].values.mean() > 0.9
