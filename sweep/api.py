"""The Python API behind the CLI: ``run`` a spec into a dataset, ``open`` a written one."""

from __future__ import annotations

import time

import xarray as xr

from sweep.dataset import CALIBRATED_OUTPUTS, ROOFLINE_OUTPUTS, assemble, open_dataset
from sweep.engine import chunk_points, evaluate
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
    t0 = time.perf_counter()
    results = evaluate(problem, chunk_size=chunk_size, progress=progress)
    seconds = time.perf_counter() - t0
    return assemble(
        spec,
        results,
        {
            "points": problem.size,
            "chunk_points": chunk_points(problem, chunk_size),
            "compute_seconds": round(seconds, 4),
        },
    )


def open(path) -> xr.Dataset:  # noqa: A001 - the documented name of the API
    """Open a dataset written by ``sweep run`` (netCDF4)."""
    return open_dataset(path)
