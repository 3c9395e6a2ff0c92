"""The cluster engine: blocks as dask.distributed tasks writing one zarr store -> netCDF."""

import pytest
import xarray as xr

import sweep
from sweep import cli
from sweep.cluster import run_cluster, store_path
from sweep.stream import stream_to_netcdf

distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")

CAL = """
name = "cal"
mode = "calibrated"
precision = "float64"
[axes]
context = { start = 1024, stop = 131072, num = 40 }
gpu = ["h100", "a100", "a10g"]
batch = ["saturated", 1, 8, 64, 256]
"""  # 600 points


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def _same(a: xr.Dataset, b: xr.Dataset):
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    volatile = {"created", "history", "compute_seconds"}
    assert {k: v for k, v in a.attrs.items() if k not in volatile} == {
        k: v for k, v in b.attrs.items() if k not in volatile
    }
    for name in a.data_vars:
        for key in ("dtype", "zlib", "shuffle", "complevel", "chunksizes"):
            assert a[name].encoding[key] == b[name].encoding[key], (name, key)


def test_local_cluster_equals_single_process(client, tmp_path):
    single = stream_to_netcdf(CAL, tmp_path / "one.nc", chunk_size=50, progress=False)
    result = run_cluster(CAL, tmp_path / "many.nc", client=client, chunk_size=50, progress=False)
    assert len(result.blocks) == len(single.blocks) > 2
    assert result.summary.state() == single.summary.state()
    with sweep.open(result.path) as a, sweep.open(single.path) as b:
        _same(a.load(), b.load())
    with sweep.open(result.path) as a:
        xr.testing.assert_identical(a.load().drop_attrs(), sweep.run(CAL).drop_attrs())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.nc", "one.nc"]  # no store left


def test_cli_with_a_scheduler_address(client, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cal.toml").write_text(CAL)
    address = client.scheduler.address
    args = ["run", "cal.toml", "-o", "c.nc", "--scheduler", address, "--chunk-size", "100", "-q"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "points: 600" in out and "wrote c.nc" in out
    with sweep.open("c.nc") as ds:
        assert ds.attrs["chunk_points"] == 90  # six 15-point context rows per block
    assert not store_path(tmp_path / "c.nc").exists()


def test_cluster_flag_errors_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cal.toml").write_text(CAL)
    assert cli.main(["run", "cal.toml", "--scheduler", "local", "--resume"]) == 2
    assert cli.main(["run", "cal.toml", "--workers", "2"]) == 2
    assert cli.main(["run", "cal.toml", "--scheduler", "local", "--reduce", "law"]) == 2
    assert not (tmp_path / "outputs").exists()
