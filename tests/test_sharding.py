"""Chunks sharded over several JAX devices give the same bits as one device."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from sweep.api import outputs_of
from sweep.engine import evaluate, iter_chunks, make_chunk_fn
from sweep.modes import build_problem
from sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: the device count is fixed when JAX initialises.
SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    import xarray as xr
    import sweep
    from sweep.api import outputs_of
    from sweep.engine import evaluate
    from sweep.modes import build_problem
    from sweep.spec import load_spec
    from sweep.stream import stream_to_netcdf

    assert jax.local_device_count() == 4, jax.devices()
    SMALL = sys.argv[1]
    # chunks of 97 and 7 points: not multiples of 4 (padded), several per grid
    for source, precision, chunk in ((SMALL, "float64", 97), (sys.argv[2], None, 7)):
        spec = load_spec(source, precision=precision)
        problem = build_problem(spec, outputs=outputs_of(spec))
        one = evaluate(problem, chunk, progress=False, devices=jax.devices()[:1])
        four = evaluate(problem, chunk, progress=False)
        assert one.keys() == four.keys()
        for k in one:
            assert one[k].dtype == four[k].dtype, k
            assert one[k].tobytes() == four[k].tobytes(), (spec.name, precision, chunk, k)
    # the streamed file too (float32, blocks of 50 points)
    a = stream_to_netcdf(SMALL, sys.argv[3] + "/one.nc", chunk_size=50, progress=False,
                         devices=jax.devices()[:1])
    b = stream_to_netcdf(SMALL, sys.argv[3] + "/four.nc", chunk_size=50, progress=False)
    x, y = xr.open_dataset(a.path), xr.open_dataset(b.path)
    for name in x.variables:
        assert x[name].values.tobytes() == y[name].values.tobytes(), name
    assert y.attrs["device_count"] == 4
    print("SHARDED-OK")
    """
)

SMALL = """
name = "small"
[axes]
context = [1024, 8192, 65536]
gpu = ["h100-sxm", "b200", "l40s"]
model = ["qwen3-30b-a3b", "deepseek-v3"]
tp = [1, 8]
dtype = ["bf16", "fp8", "fp4"]
batch = ["saturated", 1, 64]
"""


def test_four_forced_cpu_devices_are_bitwise_equal_to_one(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, SMALL, str(ROOT / "grids" / "paper.toml"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "SHARDED-OK" in run.stdout


def test_one_device_keeps_the_plain_jit_path():
    spec = load_spec(ROOT / "grids" / "paper.toml")
    problem = build_problem(spec, outputs=outputs_of(spec))
    fn = make_chunk_fn(problem, 10, devices=jax.devices()[:1])
    out = fn(np.int64(0))
    assert all(v.shape == (10,) for v in out.values())
    assert len(next(iter(out.values())).sharding.device_set) == 1


def test_iter_chunks_over_given_ranges():
    spec = load_spec(ROOT / "grids" / "paper.toml")
    problem = build_problem(spec, outputs=("tok_per_watt", "feasible"))
    whole = evaluate(problem, progress=False)["tok_per_watt"].ravel()
    ranges = [(0, 1), (1, 5), (5, 12), (12, problem.size)]
    chunk = max(b - a for a, b in ranges)
    seen = []
    for start, stop, out in iter_chunks(problem, chunk, progress=False, ranges=ranges):
        np.testing.assert_array_equal(out["tok_per_watt"], whole[start:stop])
        seen.append((start, stop))
    assert seen == ranges
    resumed = list(iter_chunks(problem, chunk, False, 2, ranges=ranges))
    assert [(a, b) for a, b, _ in resumed] == ranges[2:]
    with pytest.raises(ValueError, match="longer than the chunk"):
        list(iter_chunks(problem, 5, progress=False, ranges=ranges))
