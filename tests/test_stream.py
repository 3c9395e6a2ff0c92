"""Out-of-core sweeps: blocks, streamed netCDF files, --memory, --resume, on-the-fly reductions."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

import sweep
from sweep import cli, stream
from sweep.api import outputs_of
from sweep.dataset import write_netcdf
from sweep.engine import iter_chunks
from sweep.errors import SpecError
from sweep.modes import build_problem
from sweep.reduce import ExtremaReducer, LawReducer, reduce_sweep, reduced_path
from sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SMALL = """
name = "small"
[axes]
context = [1024, 4096, 8192, 65536]
gpu = ["h100-sxm", "b200", "l40s"]
model = ["llama-3.1-8b", "llama-3.1-70b", "qwen3-30b-a3b"]
tp = [1, 8]
dtype = ["bf16", "fp8", "fp4"]
batch = ["saturated", 1, 64]
"""  # 648 points
CAL = """
name = "cal"
mode = "calibrated"
precision = "float64"
[axes]
context = { start = 1024, stop = 131072, num = 40 }
gpu = ["h100", "a100", "a10g"]
batch = ["saturated", 1, 8, 64, 256]
"""  # 600 points, quick to compile
VOLATILE = {"created", "history", "compute_seconds", "chunk_points"}


@pytest.fixture(scope="module")
def small64():
    return sweep.run(SMALL, precision="float64")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.toml").write_text(SMALL)
    (tmp_path / "cal.toml").write_text(CAL)
    return tmp_path


def assert_same_data(a: xr.Dataset, b: xr.Dataset):
    """Every variable and coordinate equal (NaN == NaN), with the same dtypes and attributes."""
    assert set(a.variables) == set(b.variables)
    assert dict(a.sizes) == dict(b.sizes)
    for name in a.variables:
        va, vb = a[name], b[name]
        assert va.dims == vb.dims and va.dtype == vb.dtype, name
        if va.dtype.kind == "f":
            np.testing.assert_array_equal(va.values, vb.values, err_msg=name)
        else:
            assert np.array_equal(va.values, vb.values), name
        assert va.attrs.keys() == vb.attrs.keys(), name
        for key in va.attrs:
            assert np.array_equal(va.attrs[key], vb.attrs[key]), (name, key)
    assert {k for k in a.attrs if k not in VOLATILE} == {k for k in b.attrs if k not in VOLATILE}
    for key in a.attrs:
        if key not in VOLATILE:
            assert np.array_equal(a.attrs[key], b.attrs[key]), key


# ---------------------------------------------------------------- blocks and hyperslabs


def test_flat_slabs_cover_any_range_exactly():
    rng = np.random.default_rng(0)
    for _ in range(500):
        shape = tuple(int(n) for n in rng.integers(1, 6, size=rng.integers(1, 5)))
        size = math.prod(shape)
        a = int(rng.integers(0, size))
        b = int(rng.integers(a + 1, size + 1))
        slabs = stream.flat_slabs(a, b, shape)
        assert len(slabs) <= 2 * (len(shape) - 1) + 1
        grid = np.arange(size).reshape(shape)
        pos = a
        for lo, hi, slices in slabs:
            assert lo == pos
            np.testing.assert_array_equal(grid[slices].ravel(), np.arange(lo, hi))
            pos = hi
        assert pos == b


def test_blocks_are_hyperslabs_of_whole_storage_chunks():
    rng = np.random.default_rng(1)
    for _ in range(300):
        shape = tuple(int(n) for n in rng.integers(1, 7, size=rng.integers(1, 5)))
        size = math.prod(shape)
        most, target = int(rng.integers(1, size + 2)), int(rng.integers(1, 50))
        blocks = stream.choose_blocks(shape, most, target)
        chunks = blocks.storage_chunks(target)
        grid = np.arange(size).reshape(shape)
        pos = 0
        for i in range(len(blocks)):
            start, stop = blocks[i]
            assert start == pos and 0 < stop - start <= blocks.chunk
            assert blocks.chunk <= max(most, shape[-1])
            slab = blocks.slab(i)
            np.testing.assert_array_equal(grid[slab].ravel(), np.arange(start, stop))
            for d, (s, c) in enumerate(zip(slab, chunks, strict=True)):
                assert s.start % c == 0 and (s.stop % c == 0 or s.stop == shape[d])
            pos = stop
        assert pos == size


def test_parse_size_and_default_budget():
    assert stream.parse_size("2GB") == 2_000_000_000
    assert stream.parse_size("512MiB") == 512 * 2**20
    assert stream.parse_size("1.5G") == 1_500_000_000
    assert stream.parse_size("1000") == 1000
    for bad in ("", "2XB", "-1GB", "GB", "nan"):
        with pytest.raises(ValueError):
            stream.parse_size(bad)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert stream.default_memory() == min(4 * 10**9, ram // 4)


def test_budget_picks_chunk_and_streaming():
    spec = load_spec(ROOT / "grids" / "million.toml")
    problem = build_problem(spec, outputs=outputs_of(spec))
    big = stream.plan(problem, 10**10)
    assert not big.stream and big.chunk == problem.size
    small = stream.plan(problem, 20 * 10**6)
    assert small.stream and stream.MIN_CHUNK_POINTS <= small.chunk < problem.size
    assert small.chunk * (42 * 3) < 5 * 10**6  # the chunk's outputs, 3 copies, in a quarter
    assert stream.plan(problem, 20 * 10**6, chunk_size=777).chunk == 777


# ---------------------------------------------------------------- the streamed file


def test_streamed_file_equals_in_memory_file(small64, tmp_path):
    result = stream.stream_to_netcdf(
        SMALL, tmp_path / "s.nc", precision="float64", chunk_size=100, progress=False
    )
    assert len(result.blocks) > 1 and result.summary.points == 648
    write_netcdf(small64, tmp_path / "m.nc")
    with sweep.open(tmp_path / "s.nc") as a, sweep.open(tmp_path / "m.nc") as b:
        assert_same_data(a.load(), b.load())
        assert a.attrs["chunk_points"] == result.blocks.chunk
        for name in a.data_vars:  # same CF encoding and compression
            ea, eb = a[name].encoding, b[name].encoding
            for key in ("dtype", "zlib", "shuffle", "complevel"):
                assert ea[key] == eb[key], (name, key)
            assert repr(ea.get("_FillValue")) == repr(eb.get("_FillValue")), name
    with netCDF4.Dataset(tmp_path / "s.nc") as a, netCDF4.Dataset(tmp_path / "m.nc") as b:
        assert a.ncattrs() == b.ncattrs()
        for name in b.variables:
            assert a[name].ncattrs() == b[name].ncattrs(), name
            assert a[name].dtype == b[name].dtype and a[name].filters() == b[name].filters()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nc", "s.nc"]


def test_cli_streams_over_budget_and_keeps_summary(in_tmp, capsys, monkeypatch):
    expected = sweep.run(CAL)

    def in_memory(*args, **kwargs):
        raise AssertionError("the in-memory path was taken")

    monkeypatch.setattr(sweep, "run", in_memory)
    assert cli.main(["run", "cal.toml", "-o", "s.nc", "--memory", "20kB", "-q"]) == 0
    out = capsys.readouterr().out
    assert "points: 600" in out and "feasible:" in out and "tok/W" in out and "wrote s.nc" in out
    with sweep.open("s.nc") as ds:
        assert_same_data(ds.load(), expected)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["cal.toml", "s.nc", "small.toml"]


def test_bad_memory_exits_2(in_tmp):
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "small.toml", "--memory", "lots"])
    assert err.value.code == 2


# ---------------------------------------------------------------- interruption and resume


def _interrupt_after(monkeypatch, n_blocks, how="raise"):
    real = stream.write_slab
    calls = {"n": 0}

    def write(nc, slices, outputs):
        real(nc, slices, outputs)
        calls["n"] += 1
        if calls["n"] == n_blocks:
            if how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # graceful: stops after this block

    monkeypatch.setattr(stream, "write_slab", write)


@pytest.fixture(scope="module")
def cal_reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.nc"
    result = stream.stream_to_netcdf(CAL, path, chunk_size=50, progress=False)
    assert len(result.blocks) > 5
    return path


@pytest.mark.parametrize("how", ["raise", "sigterm"])
def test_interrupted_run_resumes_to_identical_file(in_tmp, monkeypatch, capsys, how, cal_reference):
    args = ["run", "cal.toml", "-o", "out/s.nc", "--chunk-size", "50", "-q"]
    _interrupt_after(monkeypatch, 3, how)
    assert cli.main(args + ["--memory", "1kB"]) == 130
    assert "--resume" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.chdir(in_tmp)
    names = sorted(p.name for p in (in_tmp / "out").iterdir())
    assert names == [".s.nc.partial", ".s.nc.partial.json"]  # nothing at the output path
    record = json.loads((in_tmp / "out" / ".s.nc.partial.json").read_text())
    done = 2 if how == "raise" else 3  # SIGTERM lets the block being written finish
    assert record["done"] == done and record["total"] > 3
    assert cli.main(args + ["--resume"]) == 0
    assert sorted(p.name for p in (in_tmp / "out").iterdir()) == ["s.nc"]
    with sweep.open("out/s.nc") as a, sweep.open(cal_reference) as b:
        assert_same_data(a.load(), b.load())
        assert f"resumed at block {done}" in a.attrs["history"]


def test_resume_refuses_another_spec_or_chunk(in_tmp, monkeypatch, capsys):
    args = ["run", "cal.toml", "-o", "s.nc", "--chunk-size", "50", "-q"]
    _interrupt_after(monkeypatch, 2)
    assert cli.main(args + ["--memory", "1kB"]) == 130
    monkeypatch.undo()
    monkeypatch.chdir(in_tmp)
    assert cli.main(["run", "cal.toml", "-o", "s.nc", "--chunk-size", "20", "--resume"]) == 2
    assert "--chunk-size 20 gives other blocks" in capsys.readouterr().err
    assert cli.main(args + ["--resume", "--precision", "float32"]) == 2
    assert "precision differs" in capsys.readouterr().err
    (in_tmp / "cal.toml").write_text(CAL.replace("131072", "65536"))
    assert cli.main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "resume" in err and "spec text differs" in err
    assert not (in_tmp / "s.nc").exists() and (in_tmp / ".s.nc.partial").is_file()
    # without --resume the partial run is discarded and the sweep starts over
    assert cli.main(args + ["--memory", "1kB"]) == 0
    assert sorted(p.name for p in in_tmp.iterdir()) == ["cal.toml", "s.nc", "small.toml"]


def test_a_partial_run_being_written_is_left_alone(in_tmp, monkeypatch, capsys):
    _interrupt_after(monkeypatch, 2)
    assert cli.main(["run", "cal.toml", "-o", "s.nc", "--chunk-size", "50", "--memory", "1kB"])
    monkeypatch.undo()
    monkeypatch.chdir(in_tmp)
    record_path = in_tmp / ".s.nc.partial.json"
    record = json.loads(record_path.read_text())
    assert record["pid"] == os.getpid() and record["host"]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sweep"])
    try:
        record_path.write_text(json.dumps({**record, "pid": other.pid}))
        for extra in (["--resume"], ["--memory", "1kB"]):  # resumed, or streamed anew
            assert cli.main(["run", "cal.toml", "-o", "s.nc", "-q"] + extra) == 2
            assert f"another sweep (pid {other.pid}) is writing" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    assert cli.main(["run", "cal.toml", "-o", "s.nc", "--chunk-size", "50", "-q", "--resume"]) == 0


def test_resume_with_nothing_to_resume_starts_over(in_tmp, capsys):
    assert cli.main(["run", "cal.toml", "-o", "s.nc", "--resume"]) == 0
    assert "starting from the beginning" in capsys.readouterr().err
    assert (in_tmp / "s.nc").is_file()


def test_killed_process_resumes_to_identical_file(in_tmp):
    """SIGKILL a real run between its flushes; --resume finishes it; data identical."""
    (in_tmp / "big.toml").write_text(CAL.replace("num = 40", "num = 400"))  # 400 blocks
    cmd = [sys.executable, "-m", "sweep.cli", "run", "big.toml", "-o", "k.nc", "-q"]
    cmd += ["--chunk-size", "15", "--memory", "1kB"]
    proc = subprocess.Popen(cmd, cwd=in_tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = in_tmp / ".k.nc.partial.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if record.is_file() and json.loads(record.read_text() or "{}").get("done", 0) >= 5:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (in_tmp / "k.nc").exists()
    state = json.loads(record.read_text())
    assert 5 <= state["done"] < state["total"] == 400
    assert cli.main(cmd[3:] + ["--resume"]) == 0
    stream.stream_to_netcdf("big.toml", "ref.nc", chunk_size=15, progress=False)
    with sweep.open("k.nc") as a, sweep.open("ref.nc") as b:
        assert_same_data(a.load(), b.load())


# ---------------------------------------------------------------- reductions


EXTREMA_OVER = [("context", "batch"), ("gpu",), None]


@pytest.fixture(scope="module")
def reduced():
    """Every reducer fed in one pass, by chunks of 37 points that cut slices anywhere."""
    spec = load_spec(SMALL, precision="float64")
    problem = build_problem(spec, outputs=("tok_per_watt", "feasible"))
    reducers = [LawReducer(spec)] + [ExtremaReducer(spec, over) for over in EXTREMA_OVER]
    for start, stop, out in iter_chunks(problem, 37, progress=False):
        for r in reducers:
            r.update(start, stop, out)
    return spec, [r.result() for r in reducers]


def test_law_slopes_match_a_least_squares_fit(small64, reduced):
    law = reduced[1][0]
    tokw = small64["tok_per_watt"].transpose("context", ...).values
    ok = small64["feasible"].transpose("context", ...).values
    x = np.log2(small64["context"].values)
    slope, r2, n = (law[k].values for k in ("slope", "r2", "n_feasible"))
    assert law["slope"].dims == ("gpu", "model", "tp", "dtype", "batch")
    checked = 0
    for idx in np.ndindex(slope.shape):
        m = ok[(slice(None),) + idx]
        assert n[idx] == m.sum()
        if m.sum() < 2:
            assert np.isnan(slope[idx])
            continue
        y = np.log2(tokw[(slice(None),) + idx][m])
        np.testing.assert_allclose(slope[idx], np.polyfit(x[m], y, 1)[0], rtol=1e-9, atol=1e-12)
        if m.sum() > 2:
            np.testing.assert_allclose(r2[idx], np.corrcoef(x[m], y)[0, 1] ** 2, atol=1e-9)
        checked += 1
    assert checked > 50
    sat = law.sel(batch=0, dtype="bf16", model="llama-3.1-8b", tp=1, gpu="h100-sxm")
    assert -1.1 < float(sat["slope"]) < -0.5  # the law, bent by the power curve


@pytest.mark.parametrize("which", range(len(EXTREMA_OVER)))
def test_extrema_match_xarray(small64, reduced, which):
    spec, results = reduced
    ext, over = results[1 + which], EXTREMA_OVER[which]
    dims = over or tuple(spec.axes)
    tokw = small64["tok_per_watt"].where(small64["feasible"])
    np.testing.assert_array_equal(ext["tok_per_watt_max"].values, tokw.max(dims).values)
    np.testing.assert_array_equal(ext["tok_per_watt_min"].values, tokw.min(dims).values)
    np.testing.assert_array_equal(ext["n_feasible"].values, small64["feasible"].sum(dims).values)
    # the coordinates where the max occurs hold the max
    kept = [d for d in spec.axes if d not in dims]
    for idx in np.ndindex(ext["tok_per_watt_max"].shape):
        here = dict(zip(kept, idx, strict=True))
        best = float(ext["tok_per_watt_max"][idx])
        if np.isnan(best):
            assert all(ext[f"{d}_at_max"].values[idx] in (-1, "") for d in dims)
            continue
        at = {d: ext[f"{d}_at_max"].values[idx] for d in dims}
        assert float(tokw.isel(here).sel(at)) == best


def test_reduce_sweep_and_cli_write_only_the_reductions(in_tmp, capsys):
    args = ["run", "cal.toml", "-o", "x.nc", "--reduce", "law", "--reduce", "extrema"]
    assert cli.main(args + ["--over", "context,batch", "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote x.law.nc" in out and "wrote x.extrema.nc" in out and "slope median" in out
    written = sorted(p.name for p in in_tmp.iterdir() if p.suffix == ".nc")
    assert written == ["x.extrema.nc", "x.law.nc"]
    with sweep.open("x.extrema.nc") as ds:
        assert set(ds.dims) == {"gpu"}
        assert ds.attrs["reduction"] == "extrema" and ds.attrs["reduced_dims"] == "context batch"
        assert ds["tok_per_watt_max"].sel(gpu="h100") > 17.6  # shortest context, saturated
        assert int(ds["context_at_max"].sel(gpu="h100")) == 1024
    with sweep.open("x.law.nc") as ds:  # saturated calibrated profiles: the 1/W law
        assert -1.05 < float(ds["slope"].sel(gpu="h100", batch=0)) < -0.85
    reducers, summary, _ = reduce_sweep(CAL, ["law"], chunk_size=100, progress=False)
    assert summary.points == 600 and reducers[0].result()["slope"].shape == (3, 5)
    assert reduced_path("outputs/cal.nc", "law") == Path("outputs/cal.law.nc")


def test_bad_reduction_arguments_exit_2(in_tmp, capsys):
    assert cli.main(["run", "small.toml", "--reduce", "extrema", "--over", "colour"]) == 2
    assert "over" in capsys.readouterr().err
    assert cli.main(["run", "small.toml", "--over", "gpu"]) == 2
    assert cli.main(["run", "small.toml", "--reduce", "law", "--over", "gpu"]) == 2
    assert cli.main(["run", "small.toml", "--reduce", "law", "--resume"]) == 2
    with pytest.raises(SpecError):
        ExtremaReducer(load_spec(SMALL), "gpu gpu")
    assert not (in_tmp / "outputs").exists()
