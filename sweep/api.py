"""The Python API behind the CLI: ``run`` a spec into a dataset, ``open`` a written one."""

from __future__ import annotations

import xarray as xr

from sweep.dataset import CALIBRATED_OUTPUTS, ROOFLINE_OUTPUTS, assemble, open_dataset
from sweep.engine import evaluate_timed
from sweep.modes import build_problem
from sweep.spec import GridSpec, load_spec


def outputs_of(spec: GridSpec) -> tuple[str, ...]:
    return ROOFLINE_OUTPUTS if spec.mode == "roofline" else CALIBRATED_OUTPUTS


def run(
    spec, precision: str | None = None, chunk_size: int | None = None, progress: bool | None = None
) -> xr.Dataset:
    """Evaluate a spec (path, TOML text, dict or GridSpec) on its whole grid.

    Returns an ``xarray.Dataset`` with one dimension per axis, in spec order; infeasible
    points are NaN with ``feasible`` false.
    """
    spec = load_spec(spec, precision=precision)
    problem = build_problem(spec, outputs=outputs_of(spec))
    results, run_attrs = evaluate_timed(problem, chunk_size=chunk_size, progress=progress)
    return assemble(spec, results, run_attrs)


def open(path) -> xr.Dataset:  # noqa: A001 - the documented name of the API
    """Open a dataset written by ``sweep run`` (netCDF4)."""
    return open_dataset(path)
