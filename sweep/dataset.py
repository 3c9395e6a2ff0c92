"""xarray datasets of sweep results: metadata, assembly, and atomic netCDF4 files.

Sweep axes are dimension coordinates; per-GPU and per-model constants are non-dimension
coordinates on ``gpu`` and ``model``; every variable carries CF ``units`` (UDUNITS spelling;
tokens are not a unit, so tokens/s is ``s-1`` and tokens/J is ``J-1``) and ``long_name``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np
import xarray as xr

from kernels.model import active_params, default_sparsity, kv_bytes_per_token_gpu, param_counts
from sweep.modes import model_fields
from sweep.spec import GridSpec

# name: (units, long_name)
VARIABLES = {
    "concurrency": ("1", "sequences in flight per model replica"),
    "concurrency_limit": ("1", "KV-cache concurrency limit per replica (B_max, n_max)"),
    "iter_time": ("s", "decode iteration time"),
    "throughput": ("s-1", "output tokens per second per GPU"),
    "power": ("W", "power draw per GPU"),
    "tok_per_watt": ("J-1", "output tokens per joule (tokens/s per W)"),
    "energy_per_token": ("J", "energy per output token"),
    "feasible": ("1", "design point is feasible (fits in memory, dtype supported, batch allowed)"),
    "t_mem": ("s", "memory-bound iteration time (weights streamed + KV read)"),
    "t_comp": ("s", "compute-bound iteration time"),
    "bound": ("1", "roofline regime of the iteration"),
    "kv_budget": ("By", "GPU memory left for the KV cache after the weights, per GPU"),
}
CALIBRATED_OUTPUTS = (
    "concurrency",
    "concurrency_limit",
    "iter_time",
    "throughput",
    "power",
    "tok_per_watt",
    "energy_per_token",
    "feasible",
)
ROOFLINE_OUTPUTS = CALIBRATED_OUTPUTS + ("t_mem", "t_comp", "bound", "kv_budget")

COORDS = {
    "context": ("1", "context window a pool is configured for (tokens)"),
    "gpu": ("", "GPU (roofline: catalog key) or calibrated profile"),
    "model": ("", "model (catalog key)"),
    "tp": ("1", "GPUs per replica (tensor-parallel degree)"),
    "dtype": ("", "weight and KV-cache number format"),
    "batch": ("1", "requested sequences per replica (0 = saturated at the concurrency limit)"),
    "sparsity": ("1", "active routed-expert fraction per token"),
}
GPU_COORDS = {
    "mem_bw": ("By s-1", "peak memory bandwidth"),
    "mem_capacity": ("By", "memory capacity"),
    "flops_bf16": ("s-1", "dense bf16 tensor FLOP/s"),
    "flops_fp8": ("s-1", "dense fp8 tensor FLOP/s (0 = unsupported)"),
    "flops_fp4": ("s-1", "dense fp4 tensor FLOP/s (0 = unsupported)"),
    "tdp": ("W", "thermal design power"),
    "power_idle": ("W", "logistic power curve: idle power"),
    "power_nominal": ("W", "logistic power curve: saturated power"),
    "power_k": ("1", "logistic power curve: steepness in log2(batch)"),
    "power_x0": ("1", "logistic power curve: midpoint in log2(batch)"),
}
PROFILE_COORDS = {
    "w_s": ("s", "calibrated base iteration time"),
    "h_s": ("s", "calibrated per-sequence time at calib_ctx"),
    "calib_ctx": ("1", "calibration context (tokens)"),
    "max_slots": ("1", "calibrated concurrency slots at calib_ctx"),
    "kv_blocks": ("1", "KV-cache blocks"),
    "blk": ("1", "KV-cache block size (tokens)"),
    "tp": ("1", "GPUs per replica of the calibrated deployment"),
    **{k: GPU_COORDS[k] for k in ("power_idle", "power_nominal", "power_k", "power_x0")},
}
MODEL_COORDS = {
    "param_count": ("1", "total parameters (all experts)"),
    "active_param_count": ("1", "parameters active per token (at experts_per_token/n_experts)"),
    "n_layers": ("1", "transformer layers"),
    "max_position": ("1", "longest context the model supports (tokens)"),
    "kv_bytes_per_token": ("By", "bf16 KV-cache bytes per token of history, whole replica"),
}
REFERENCES = (
    "Chen et al. 2026, The 1/W Law, arXiv:2603.17280; inference-fleet-sim, arXiv:2603.16054; "
    "FleetOpt, arXiv:2603.16514"
)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("oneoverw-sweep")
    except PackageNotFoundError:
        return "unknown"


def provenance(spec: GridSpec | None = None) -> dict:
    """Global attributes: CF conventions, versions, backend and device, time of creation."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    device = jax.devices()[0]
    attrs = {
        "Conventions": "CF-1.13",
        "source": f"oneoverw-sweep {package_version()} (JAX {jax.__version__})",
        "references": REFERENCES,
        "package_version": package_version(),
        "jax_version": jax.__version__,
        "jaxlib_version": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
        "backend": jax.default_backend(),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "device_count": jax.device_count(),
        "host": platform.node(),
        "created": now,
        "history": f"{now} created by oneoverw-sweep",
    }
    if spec is not None:
        attrs.update(
            title=f"1/W sweep: {spec.name}",
            spec_name=spec.name,
            mode=spec.mode,
            precision=spec.precision,
            spec=spec.text,
            description=spec.description,
        )
    return attrs


def axis_coords(spec: GridSpec) -> dict:
    """Dimension coordinates, scalar coordinates for unswept axes, and per-entry constants."""
    from sweep.modes import coord_values

    coords = {}
    for name, values in spec.axes.items():
        coords[name] = xr.Variable(name, coord_values(name, values), _attrs(COORDS[name]))
    for name, value in spec.defaults.items():
        coords[name] = xr.Variable((), coord_values(name, [value])[0], _attrs(COORDS[name]))
    if "gpu" in spec.axes:
        coords.update(_gpu_coords(spec))
    if "model" in spec.axes:
        coords.update(_model_coords(spec))
    return coords


def _attrs(meta) -> dict:
    units, long_name = meta
    return {"long_name": long_name, **({"units": units} if units else {})}


def _gpu_coords(spec):
    keys = spec.axes["gpu"]
    entries = [spec.gpus[k] for k in keys]
    table = PROFILE_COORDS if spec.mode == "calibrated" else GPU_COORDS
    prefix = "profile_" if spec.mode == "calibrated" else ""
    out = {
        f"{prefix}{k}": xr.Variable(
            "gpu", np.array([float(getattr(e, k)) for e in entries]), _attrs(meta)
        )
        for k, meta in table.items()
    }
    out["gpu_name"] = xr.Variable(
        "gpu", np.array([e.name for e in entries], dtype=str), {"long_name": "full name"}
    )
    if spec.mode == "calibrated":
        out["profile_model"] = xr.Variable(
            "gpu",
            np.array([e.model for e in entries], dtype=str),
            {"long_name": "model the profile was calibrated for"},
        )
    else:
        out["power_source"] = xr.Variable(
            "gpu",
            np.array([e.power_source for e in entries], dtype=str),
            {"long_name": "power curve: measured, or projected from tdp (MODEL.md)"},
        )
        prices = [np.nan if e.price_per_hour is None else e.price_per_hour for e in entries]
        out["price_per_hour"] = xr.Variable(
            "gpu", np.array(prices, dtype=float), {"long_name": "price per GPU-hour (USD)"}
        )
    return out


def _model_coords(spec):
    keys = spec.axes["model"]
    fields = [model_fields(spec.models[k]) for k in keys]
    m = {k: np.array([f[k] for f in fields], dtype=np.float64) for k in fields[0]}
    counts = param_counts(m)
    values = {
        "param_count": np.asarray(counts.total),
        "active_param_count": np.asarray(active_params(counts, default_sparsity(m))),
        "n_layers": m["n_layers"],
        "max_position": m["max_position"],
        "kv_bytes_per_token": np.asarray(kv_bytes_per_token_gpu(m, 2.0, 1.0)),
    }
    out = {
        k: xr.Variable("model", np.asarray(v, dtype=np.float64), _attrs(MODEL_COORDS[k]))
        for k, v in values.items()
    }
    out["model_name"] = xr.Variable(
        "model",
        np.array([spec.models[k].name for k in keys], dtype=str),
        {"long_name": "full name"},
    )
    return out


def data_variable(name: str, dims, values) -> xr.Variable:
    attrs = _attrs(VARIABLES[name])
    if name == "bound":
        attrs.update(
            flag_values=np.array([0, 1], dtype=np.int8),
            flag_meanings="memory compute",
            comment="-1 where the point is infeasible",
        )
    if name == "feasible":
        attrs.pop("units", None)
    return xr.Variable(dims, values, attrs)


def assemble(spec: GridSpec, results: dict, extra_attrs: dict | None = None) -> xr.Dataset:
    dims = tuple(spec.axes)
    data = {k: data_variable(k, dims, v) for k, v in results.items()}
    ds = xr.Dataset(data, coords=axis_coords(spec), attrs=provenance(spec))
    ds.attrs.update(extra_attrs or {})
    return ds


def encoding(ds: xr.Dataset, complevel: int = 1) -> dict:
    """zlib + shuffle on every numeric data variable; NaN is the float fill value."""
    enc = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind in "fiub":
            enc[name] = {"zlib": complevel > 0, "complevel": complevel, "shuffle": True}
    return enc


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_netcdf(ds: xr.Dataset, path, complevel: int = 1) -> Path:
    """Write compressed NETCDF4 atomically: nothing is left at ``path`` if this fails."""
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding(ds, complevel))
    return path


def open_dataset(path) -> xr.Dataset:
    path = Path(path)
    if not path.is_file():
        from sweep.errors import SpecError

        raise SpecError("path", f"no such dataset: {path}")
    return xr.open_dataset(path, engine="netcdf4")
