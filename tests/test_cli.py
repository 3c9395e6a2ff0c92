"""The sweep CLI: exit codes, atomic output, summaries."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sweep
from sweep import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name = "tiny"
[axes]
context = [4096, 65536]
gpu = ["h100-sxm"]
model = ["llama-3.1-8b"]
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    return tmp_path


def test_run_writes_default_output_and_summary(in_tmp, capsys):
    assert cli.main(["run", "tiny.toml"]) == 0
    out = capsys.readouterr().out
    assert "points: 2" in out and "feasible: 100.0%" in out and "tok/W" in out
    path = in_tmp / "outputs" / "tiny.nc"
    assert path.is_file() and f"wrote {Path('outputs') / 'tiny.nc'}" in out
    assert sorted(p.name for p in (in_tmp / "outputs").iterdir()) == ["tiny.nc"]
    with sweep.open(path) as ds:
        assert ds.sizes["context"] == 2


def test_paper_grid_prints_headline_points(in_tmp, capsys):
    assert cli.main(["run", str(ROOT / "grids" / "paper.toml"), "-o", "p.nc", "--plot"]) == 0
    out = capsys.readouterr().out
    row4k = next(line for line in out.splitlines() if line.strip().startswith("4096 "))
    row64k = next(line for line in out.splitlines() if line.strip().startswith("65536 "))
    assert "17.62" in row4k and "256" in row4k
    assert "1.502" in row64k and "16" in row64k
    assert (in_tmp / "p.png").stat().st_size > 10_000


def test_bad_spec_exits_2_with_field_and_no_output(in_tmp, capsys):
    (in_tmp / "bad.toml").write_text(TINY.replace('"h100-sxm"', '"h100"'))
    assert cli.main(["run", "bad.toml", "-o", "bad.nc"]) == 2
    err = capsys.readouterr().err
    assert "axes.gpu[0]" in err and "h100-sxm" in err
    assert not (in_tmp / "bad.nc").exists()
    assert not (in_tmp / "outputs").exists()


def test_bad_arguments_exit_2(in_tmp):
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "tiny.toml", "--precision", "float16"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "tiny.toml", "--chunk-size", "0"])
    assert err.value.code == 2
    assert cli.main(["info", "missing.nc"]) == 2


def test_interrupted_write_leaves_nothing(in_tmp, monkeypatch):
    import xarray as xr

    def interrupted(self, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", interrupted)
    assert cli.main(["run", "tiny.toml", "-o", "out/x.nc"]) == 130
    assert list((in_tmp / "out").iterdir()) == []


def test_info_and_catalog(in_tmp, capsys):
    assert cli.main(["run", "tiny.toml", "-o", "t.nc"]) == 0
    capsys.readouterr()
    assert cli.main(["info", "t.nc"]) == 0
    out = capsys.readouterr().out
    assert "tok_per_watt" in out and "J-1" in out and "roofline" in out
    for which in ("gpus", "models", "profiles"):
        assert cli.main(["catalog", which]) == 0
    out = capsys.readouterr().out
    assert "h100-sxm" in out and "deepseek-v3" in out and "a10g" in out


def test_import_model_prints_a_spec_table(in_tmp, capsys):
    config = ROOT / "tests" / "data" / "llama-3.1-8b" / "config.json"
    if not config.is_file():
        config = next((ROOT / "tests" / "data").rglob("*.json"))
    assert cli.main(["import-model", str(config), "--key", "mine"]) == 0
    out = capsys.readouterr().out
    assert "[models.mine]" in out or "[mine]" in out
    assert cli.main(["import-model", "nope.json"]) == 2


def test_console_script_exit_codes(in_tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "run", "tiny.toml", "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "run", "nope.toml"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "no such file" in bad.stderr
    assert "Traceback" not in bad.stderr
