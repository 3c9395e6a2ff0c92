"""Fleet sweeps: context-length routing (FleetOpt) over design grids, and its gradients.

``fleet(spec) -> xarray.Dataset`` evaluates the fleet model of :mod:`kernels.fleet` (its module
docstring is the model's specification) at every point of a grid through the generic engine
(``sweep.engine``: one vmapped point function, fixed-shape jitted chunks, no Python loop over
points). ``fleet_grad(spec, wrt=...)`` gives elasticities ``d ln fleet_tok_per_watt / d ln x``
of the relaxed model (continuous slots and server counts) by forward-mode autodiff.
``sweep fleet SPEC [-o PATH]`` writes the dataset and prints the routing / GPU-generation gain
summary (:func:`summarise`).

Fleet spec (TOML), e.g. ``grids/fleet.toml``::

    name = "fleet"
    mode = "fleet"              # marks a fleet spec (``sweep run`` refuses it; optional here)
    pool_mode = "roofline"      # or "calibrated": gpu_short/gpu_long are then profile keys
    precision = "float64"       # default float64 (Erlang C at thousands of servers)
    description = "..."

    [workload]                  # one workload: a preset, cdf, requests file or parametric law
    preset = "agent"            # (sweep.workload.from_spec); or several, as a dimension:
    # [workloads.chat]          #   [workloads.NAME] tables -> a `workload` axis, in file order
    # preset = "chat"

    [axes]                      # every axis is a dimension, in the order written
    b_short = [2048, 4096, 8192]            # tokens (or {start, stop, num, spacing})
    w_long = [65536, 131072]                # tokens (or a range)
    arrival_rate = [10.0, 100.0]            # requests/s (Poisson)
    slo = [0.5, 1.0, 2.0]                   # s: P99 queueing-wait target
    gpu_short = ["h100-sxm", "b200"]        # GPU catalog keys (roofline) / profile keys
    gpu_long = ["h100-sxm", "b200"]
    model = ["llama-3.1-70b"]               # roofline only (required there)
    tp = [8]                                # roofline only; default 1
    dtype = ["bf16"]                        # roofline only; default bf16

    [params]                    # as in sweep specs (fill, mem_util, ...) plus
    quantile = 0.99             # the SLO quantile
    max_util = 0.85             # utilisation cap per pool
    # prefill_chunk = 512       # calibrated only: prompt tokens per base iteration W_s

    [prices]                    # optional: USD per GPU-hour by GPU / profile key
    # "h100-sxm" = 2.5          # (catalog price_per_hour otherwise; none -> cost NaN)

    [summary]                   # optional: the GPUs the printed summary compares
    # baseline = "h100-sxm"     # default: the first gpu_long value
    # upgrade = "b200"          # default: the second

``[gpus.NAME]``, ``[models.NAME]`` (roofline) and ``[profiles.NAME]`` (calibrated) add catalog
entries as in sweep specs. Every refusal is a :class:`sweep.errors.SpecError` naming the field.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from kernels import fleet as kfleet
from kernels.calibrated import PROFILE_INPUTS
from kernels.model import default_sparsity
from sweep.engine import Axis, Problem, evaluate_timed
from sweep.errors import SpecError
from sweep.modes import FLOPS_KEYS, GPU_FIELDS, model_fields
from sweep.spec import (
    DTYPES,
    PARAMS,
    PRECISIONS,
    _axis_value,
    catalog_entries,
    check_keys,
    parse_axis,
    parse_params,
    read_spec_source,
    spec_name,
    spec_precision,
)
from sweep.spec import axes_table as spec_axes_table
from sweep.workload import Workload, from_spec

__all__ = [
    "FleetSpec",
    "GRAD_WRT",
    "VARIABLES",
    "fleet",
    "fleet_grad",
    "is_fleet_spec",
    "load_fleet_spec",
    "plot_gain",
    "register",
    "summarise",
    "summarise_grad",
]

POOL_MODES = ("roofline", "calibrated")
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "mode",
    "pool_mode",
    "precision",
    "workload",
    "workloads",
    "axes",
    "params",
    "gpus",
    "models",
    "profiles",
    "prices",
    "summary",
)
COMMON_AXES = ("b_short", "w_long", "arrival_rate", "slo", "gpu_short", "gpu_long")
ROOFLINE_AXES = COMMON_AXES + ("model", "tp", "dtype")
CALIBRATED_AXES = COMMON_AXES
REQUIRED_AXES = {"roofline": COMMON_AXES + ("model",), "calibrated": COMMON_AXES}
AXIS_DEFAULTS = {"tp": 1, "dtype": "bf16"}
DEFAULT_CHUNK = 4096  # points per compiled chunk (each point carries the workload's CDF)


def _real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


FLEET_PARAMS: dict[str, tuple[Any, Any, str]] = {
    "quantile": (0.99, lambda v: _real(v) and 0 < v < 1, "a number in (0, 1)"),
    "max_util": (0.85, lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "prefill_chunk": (
        512,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "an integer >= 0 (prompt tokens per base iteration W_s; 0 neglects prefill)",
    ),
}
ROOFLINE_PARAMS = tuple(PARAMS) + ("quantile", "max_util")
CALIBRATED_PARAMS = ("fill", "max_seqs", "quantile", "max_util", "prefill_chunk")

GRAD_WRT = ("b_short", "w_long", "arrival_rate", "slo", "fill", "max_util")
"""Continuous inputs ``fleet_grad`` can differentiate with respect to."""
DEFAULT_WRT = ("b_short", "arrival_rate", "slo")


# --------------------------------------------------------------------------------------------
# Spec


@dataclass(frozen=True)
class FleetSpec:
    """A validated fleet spec. ``axes`` maps dimension names to coordinate values in spec order
    (with ``workload`` when several workloads are given); ``defaults`` holds unswept axes."""

    name: str
    pool_mode: str
    precision: str
    axes: dict[str, tuple]
    defaults: dict[str, Any]
    params: dict[str, Any]
    gpus: dict[str, Any]  # catalog.GPU or catalog.Profile by key (those used)
    models: dict[str, Any]
    workloads: dict[str, Workload]
    prices: dict[str, float]  # USD per GPU-hour, NaN when unknown
    baseline: str | None = None
    upgrade: str | None = None
    single_workload: bool = True
    text: str = ""
    description: str = ""
    mode: str = field(default="fleet")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def is_fleet_spec(spec) -> bool:
    """True for a FleetSpec, or a path / TOML text / dict whose top level says mode = "fleet"."""
    if isinstance(spec, FleetSpec):
        return True
    if hasattr(spec, "mode") and not isinstance(spec, str | dict | Path):
        return getattr(spec, "mode", None) == "fleet"
    try:
        table, _, _ = read_spec_source(spec)
    except SpecError:
        return False
    return isinstance(table, dict) and table.get("mode") == "fleet"


def load_fleet_spec(spec, precision: str | None = None) -> FleetSpec:
    """Validate a fleet spec (path, TOML text, dict or FleetSpec)."""
    if isinstance(spec, FleetSpec):
        if precision and precision != spec.precision:
            return _replace(spec, precision=precision)
        return spec
    if not isinstance(spec, str | Path | dict):
        raise SpecError("spec", f"a fleet spec path, TOML text or dict, got {type(spec).__name__}")
    table, text, base = read_spec_source(spec)
    check_keys(table, TOP_LEVEL_KEYS, "")
    mode = table.get("mode", "fleet")
    if mode != "fleet":
        raise SpecError(
            "mode",
            f'{mode!r}: a fleet spec says mode = "fleet" (a {mode} spec runs with `sweep run`)',
        )
    name = spec_name(table, "fleet")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise SpecError("description", "must be a string")
    pool_mode = table.get("pool_mode", "roofline")
    if pool_mode not in POOL_MODES:
        raise SpecError("pool_mode", f"{pool_mode!r}; allowed: {', '.join(POOL_MODES)}")
    precision = spec_precision(table, precision, "float64")

    calibrated = pool_mode == "calibrated"
    gpus, models = catalog_entries(table, calibrated, base, 'pool_mode = "calibrated"')
    allowed = ROOFLINE_PARAMS if pool_mode == "roofline" else CALIBRATED_PARAMS
    params = parse_params(table.get("params", {}), allowed, {**PARAMS, **FLEET_PARAMS})
    workloads, single = _workloads(table, base)

    allowed = ROOFLINE_AXES if pool_mode == "roofline" else CALIBRATED_AXES
    axes_table = spec_axes_table(
        table, allowed, REQUIRED_AXES[pool_mode], f"{pool_mode} fleet specs need"
    )
    axes = {k: _axis(k, v, gpus, models) for k, v in axes_table.items()}
    if not single:
        axes["workload"] = tuple(workloads)
    defaults = {}
    if pool_mode == "roofline":
        for k, v in AXIS_DEFAULTS.items():
            if k not in axes:
                defaults[k] = _axis(k, v, gpus, models)[0]

    used = set(axes["gpu_short"]) | set(axes["gpu_long"])
    prices = _prices(table.get("prices", {}), gpus, pool_mode)
    baseline, upgrade = _summary(table.get("summary", {}), axes)
    return FleetSpec(
        name=name,
        pool_mode=pool_mode,
        precision=precision,
        axes=axes,
        defaults=defaults,
        params=params,
        gpus={k: gpus[k] for k in gpus if k in used},
        models={k: models[k] for k in axes.get("model", ())},
        workloads=workloads,
        prices={k: prices.get(k, math.nan) for k in used},
        baseline=baseline,
        upgrade=upgrade,
        single_workload=single,
        text=text,
        description=description,
    )


def _replace(spec: FleetSpec, **changes) -> FleetSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _workloads(table, base) -> tuple[dict[str, Workload], bool]:
    one, many = table.get("workload"), table.get("workloads")
    if one is not None and many is not None:
        raise SpecError("workloads", "give either [workload] (one) or [workloads.NAME] tables")
    if one is None and many is None:
        raise SpecError(
            "workload",
            'missing; e.g. [workload] preset = "agent" (or cdf, requests, kind), '
            "or several [workloads.NAME] tables",
        )
    if one is not None:
        w = from_spec(one, base, field="workload")
        return {w.name: w}, True
    if not isinstance(many, dict) or not many:
        raise SpecError("workloads", "a table of [workloads.NAME] tables, at least one")
    out = {}
    for key, sub in many.items():
        w = from_spec(sub, base, field=f"workloads.{key}")
        out[key] = w
    return out, False


def _axis(name, raw, gpus, models) -> tuple:
    def check(v, where):
        return _axis_item(name, v, gpus, models, where)

    return parse_axis(name, raw, check, range_axes=("b_short", "w_long"))


def _axis_item(name, v, gpus, models, where):
    if name in ("b_short", "w_long"):
        return _axis_value("context", v, gpus, models, where)
    if name in ("gpu_short", "gpu_long"):
        return _axis_value("gpu", v, gpus, models, where)
    if name == "arrival_rate":
        if not _real(v) or v <= 0:
            raise SpecError(where, f"{v!r}; allowed: requests per second, a number > 0")
        return float(v)
    if name == "slo":
        if not _real(v) or v <= 0:
            raise SpecError(where, f"{v!r}; allowed: seconds (P99 queueing wait), a number > 0")
        return float(v)
    return _axis_value(name, v, gpus, models, where)


def _prices(table, gpus, pool_mode) -> dict[str, float]:
    check_keys(table, list(gpus), "prices")
    out = {}
    if pool_mode == "roofline":
        for key, g in gpus.items():
            out[key] = math.nan if g.price_per_hour is None else float(g.price_per_hour)
    for key, v in table.items():
        if not _real(v) or v < 0:
            raise SpecError(f"prices.{key}", f"{v!r}; allowed: USD per GPU-hour, a number >= 0")
        out[key] = float(v)
    return out


def _summary(table, axes):
    check_keys(table, ("baseline", "upgrade"), "summary")
    longs = axes["gpu_long"]
    baseline = table.get("baseline", longs[0])
    upgrade = table.get("upgrade", longs[1] if len(longs) > 1 else None)
    for key, v in (("baseline", baseline), ("upgrade", upgrade)):
        if v is not None and v not in longs:
            raise SpecError(
                f"summary.{key}", f"{v!r} is not on axes.gpu_long; allowed: {', '.join(longs)}"
            )
    return baseline, upgrade


# --------------------------------------------------------------------------------------------
# Problem: spec -> engine inputs and the point function


def _gpu_fields(spec: FleetSpec, keys, prefix: str) -> dict[str, np.ndarray]:
    names = PROFILE_INPUTS if spec.pool_mode == "calibrated" else GPU_FIELDS
    out = {f"{prefix}{k}": np.array([float(getattr(spec.gpus[g], k)) for g in keys]) for k in names}
    out[f"{prefix}price"] = np.array([spec.prices[g] for g in keys], dtype=float)
    return out


def _dtype_fields(values) -> dict[str, np.ndarray]:
    return {
        "w_bytes": np.array([DTYPES[v][0] for v in values]),
        "kv_bytes": np.array([DTYPES[v][1] for v in values]),
        "flops_index": np.array([float(FLOPS_KEYS.index(DTYPES[v][2])) for v in values]),
    }


def _workload_fields(workloads) -> dict[str, np.ndarray]:
    n = max(w.tokens.size for w in workloads)
    padded = [w.padded(n) for w in workloads]
    return {
        "wl_tokens": np.stack([w.tokens for w in padded]),
        "wl_cdf": np.stack([w.cdf for w in padded]),
        "wl_output_share": np.array([w.output_share for w in padded]),
    }


def axis_fields(spec: FleetSpec, axis: str, values) -> dict[str, np.ndarray]:
    """The point inputs that the values of one fleet axis carry."""
    if axis == "gpu_short":
        return _gpu_fields(spec, values, "short_")
    if axis == "gpu_long":
        return _gpu_fields(spec, values, "long_")
    if axis == "model":
        rows = [model_fields(spec.models[v]) for v in values]
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}
    if axis == "dtype":
        return _dtype_fields(values)
    if axis == "workload":
        return _workload_fields([spec.workloads[v] for v in values])
    return {axis: np.asarray(values, dtype=float)}


def coord_values(axis: str, values) -> np.ndarray:
    if axis in ("gpu_short", "gpu_long", "model", "dtype", "workload"):
        return np.array(values, dtype=str)
    if axis in ("arrival_rate", "slo"):
        return np.asarray(values, dtype=float)
    return np.asarray(values, dtype=np.int64)


def _constants(spec: FleetSpec) -> dict[str, float]:
    p = spec.params
    out = {"fill": p["fill"], "max_seqs": p["max_seqs"]}
    out.update(quantile=p["quantile"], max_util=p["max_util"])
    if spec.pool_mode == "roofline":
        out.update({k: p[k] for k in ("blk", "mem_util", "bw_eff", "flops_eff", "t_layer")})
        out["context_limit"] = 1.0 if p["context_limit"] == "model" else 0.0
        for axis, value in spec.defaults.items():
            fields = _dtype_fields([value]) if axis == "dtype" else {axis: [value]}
            out.update({k: v[0] for k, v in fields.items()})
    else:
        out["prefill_chunk"] = p["prefill_chunk"]
    return {k: float(v) for k, v in out.items()}


def _roofline_prepare(p: dict) -> dict:
    """Each pool's peak FLOP/s for the point's dtype, and the model's default sparsity."""
    p = dict(p)
    i = p.pop("flops_index")
    for prefix in ("short_", "long_"):
        bf16, fp8, fp4 = (p.pop(prefix + k) for k in FLOPS_KEYS)
        p[prefix + "flops"] = jnp.where(i == 0, bf16, jnp.where(i == 1, fp8, fp4))
    p["sparsity"] = default_sparsity(p)
    return p


def _gpu_maker(spec: FleetSpec):
    if spec.pool_mode == "calibrated":
        return dict, kfleet.calibrated_gpu
    make = partial(
        kfleet.roofline_gpu,
        expert_coverage=spec.params["expert_coverage"],
        power=spec.params["power"],
    )
    return _roofline_prepare, make


def _axes(spec: FleetSpec) -> tuple[Axis, ...]:
    axes = [
        Axis(name, coord_values(name, values), axis_fields(spec, name, values))
        for name, values in spec.axes.items()
    ]
    if spec.single_workload:  # a length-1 dimension, squeezed out of the dataset
        (key,) = spec.workloads
        axes.append(Axis("workload", np.array([key]), axis_fields(spec, "workload", [key])))
    return tuple(axes)


def build_problem(spec: FleetSpec, relaxed: bool = False, point_fn=None) -> Problem:
    """The fleet grid as an engine Problem (``point_fn(raw_inputs) -> outputs`` overrides)."""
    prepare, make_gpu = _gpu_maker(spec)

    def point(raw):
        return kfleet.fleet_point(prepare(raw), make_gpu, relaxed=relaxed)

    return Problem(
        axes=_axes(spec),
        constants=_constants(spec),
        point_fn=point if point_fn is None else point_fn(prepare, make_gpu),
        dtype=np.dtype(spec.precision),
    )


# --------------------------------------------------------------------------------------------
# Dataset metadata

# name: (units, long_name)
VARIABLES = {
    "fleet_tok_per_watt": ("J-1", "two-pool fleet output tokens per joule"),
    "homogeneous_tok_per_watt": ("J-1", "homogeneous fleet (all GPUs at w_long) tokens per joule"),
    "gain": ("1", "two-pool tok/W over homogeneous tok/W on gpu_long"),
    "gpus_short": ("1", "GPUs in the short pool (replicas x tp)"),
    "gpus_long": ("1", "GPUs in the long pool (replicas x tp)"),
    "gpus_two_pool": ("1", "GPUs in the two-pool fleet"),
    "gpus_homogeneous": ("1", "GPUs in the homogeneous fleet"),
    "p99_ttft_short": ("s", "short pool time to first token: quantile wait + quantile prefill"),
    "p99_ttft_long": ("s", "long pool time to first token: quantile wait + quantile prefill"),
    "p99_ttft_homogeneous": ("s", "homogeneous fleet TTFT: quantile wait + quantile prefill"),
    "p99_wait_short": ("s", "short pool queueing wait at the SLO quantile (Kimura M/G/c)"),
    "p99_wait_long": ("s", "long pool queueing wait at the SLO quantile (Kimura M/G/c)"),
    "p99_wait_homogeneous": ("s", "homogeneous fleet queueing wait at the SLO quantile"),
    "util_short": ("1", "short pool slot utilisation (offered load / slots)"),
    "util_long": ("1", "long pool slot utilisation (offered load / slots)"),
    "util_homogeneous": ("1", "homogeneous fleet slot utilisation"),
    "concurrency_short": ("1", "short pool mean sequences in flight per replica"),
    "concurrency_long": ("1", "long pool mean sequences in flight per replica"),
    "concurrency_homogeneous": ("1", "homogeneous fleet mean sequences in flight per replica"),
    "slots_short": ("1", "short pool KV slots per replica (B_max at b_short)"),
    "slots_long": ("1", "long pool KV slots per replica (B_max at w_long)"),
    "slots_homogeneous": ("1", "homogeneous fleet KV slots per replica (B_max at w_long)"),
    "service_time_short": ("s", "short pool mean slot-holding time per request"),
    "service_time_long": ("s", "long pool mean slot-holding time per request"),
    "service_time_homogeneous": ("s", "homogeneous fleet mean slot-holding time per request"),
    "power_short": ("W", "short pool power per GPU at its mean concurrency"),
    "power_long": ("W", "long pool power per GPU at its mean concurrency"),
    "power_homogeneous": ("W", "homogeneous fleet power per GPU at its mean concurrency"),
    "share_short": ("1", "fraction of served requests routed to the short pool"),
    "rejected_share": ("1", "fraction of requests longer than w_long (served by neither fleet)"),
    "output_rate": ("s-1", "output tokens per second served (both fleets)"),
    "fleet_power": ("W", "two-pool fleet power draw"),
    "homogeneous_power": ("W", "homogeneous fleet power draw"),
    "cost_per_mtok": ("USD", "two-pool fleet GPU cost per million output tokens"),
    "cost_per_mtok_homogeneous": ("USD", "homogeneous fleet GPU cost per million output tokens"),
    "feasible": ("1", "two-pool fleet is feasible (b_short <= w_long, pools fit and can be sized)"),
    "feasible_homogeneous": ("1", "homogeneous fleet is feasible"),
    "best_b_short": ("1", "b_short (tokens) maximising two-pool tok/W on this slice"),
    "best_gain": ("1", "gain at best_b_short"),
    "best_fleet_tok_per_watt": ("J-1", "two-pool tok/W at best_b_short"),
}
GRAD_VARIABLES = {
    "fleet_tok_per_watt": ("J-1", "two-pool fleet tokens per joule, relaxed model"),
    "homogeneous_tok_per_watt": ("J-1", "homogeneous fleet tokens per joule, relaxed model"),
    "gain": ("1", "two-pool over homogeneous tok/W, relaxed model"),
}
COORDS = {
    "b_short": ("1", "routing boundary: longest request of the short pool and its window (tokens)"),
    "w_long": ("1", "window of the long pool and of the homogeneous fleet (tokens)"),
    "arrival_rate": ("s-1", "request arrival rate (Poisson), requests per second"),
    "slo": ("s", "target for the queueing wait at the SLO quantile (TTFT SLO)"),
    "gpu_short": ("", "GPU of the short pool (catalog key or calibrated profile)"),
    "gpu_long": ("", "GPU of the long pool and of the homogeneous fleet"),
    "model": ("", "model (catalog key)"),
    "tp": ("1", "GPUs per replica (tensor-parallel degree)"),
    "dtype": ("", "weight and KV-cache number format"),
    "workload": ("", "request-length workload"),
}


def _attrs(meta) -> dict:
    units, long_name = meta
    return {"long_name": long_name, **({"units": units} if units else {})}


def _coords(spec: FleetSpec) -> dict:
    coords = {}
    for name, values in spec.axes.items():
        coords[name] = xr.Variable(name, coord_values(name, values), _attrs(COORDS[name]))
    for name, value in spec.defaults.items():
        coords[name] = xr.Variable((), coord_values(name, [value])[0], _attrs(COORDS[name]))
    for pool in ("short", "long"):
        dim = f"gpu_{pool}"
        keys = spec.axes[dim]
        coords[f"{dim}_name"] = xr.Variable(
            dim, np.array([spec.gpus[k].name for k in keys], dtype=str), {"long_name": "full name"}
        )
        coords[f"price_per_hour_{pool}"] = xr.Variable(
            dim,
            np.array([spec.prices[k] for k in keys], dtype=float),
            {"long_name": "price per GPU-hour (USD; NaN: unknown)"},
        )
    keys = list(spec.workloads)
    dim = () if spec.single_workload else ("workload",)

    def per_workload(values, dtype, attrs):
        arr = np.array(values, dtype=dtype)
        return xr.Variable(dim, arr[0] if spec.single_workload else arr, attrs)

    ws = [spec.workloads[k] for k in keys]
    coords["workload_description"] = per_workload(
        [w.description for w in ws], str, {"long_name": "workload description"}
    )
    coords["workload_mean_tokens"] = per_workload(
        [w.mean() for w in ws], float, {"long_name": "mean request length (tokens)", "units": "1"}
    )
    coords["workload_output_share"] = per_workload(
        [w.output_share for w in ws], float, {"long_name": "output tokens / all tokens"}
    )
    coords["workload_synthetic"] = per_workload(
        [int(w.synthetic) for w in ws], np.int8, {"long_name": "1: synthetic (not measured)"}
    )
    return coords


def _provenance(spec: FleetSpec, extra: dict) -> dict:
    from sweep.dataset import provenance

    attrs = provenance(spec)
    attrs.update(
        title=f"fleet sweep: {spec.name}",
        pool_mode=spec.pool_mode,
        quantile=float(spec.params["quantile"]),
        max_util=float(spec.params["max_util"]),
        fleet_model=(
            "kernels/fleet.py: M/G/c pools of KV slots sized by Kimura's approximation; "
            "requests longer than w_long are rejected by both fleets"
        ),
        workloads="; ".join(f"{k}: {w.description}" for k, w in spec.workloads.items()),
        summary_baseline=spec.baseline or "",
        summary_upgrade=spec.upgrade or "",
    )
    attrs.update(extra)
    return attrs


def _variable(name, dims, values, table=VARIABLES) -> xr.Variable:
    if name.startswith("elasticity_"):
        x = name[len("elasticity_") :]
        meta = ("1", f"elasticity d ln(fleet tok/W) / d ln({x}), relaxed model")
    else:
        meta = table[name]
    if values.dtype == bool:
        values = values.astype(np.int8)
    return xr.Variable(dims, values, _attrs(meta))


def _best_over_b_short(ds: xr.Dataset) -> xr.Dataset:
    """best_b_short, best_gain and best_fleet_tok_per_watt over the b_short axis."""
    tokw = ds["fleet_tok_per_watt"]
    filled = tokw.fillna(-np.inf)
    idx = filled.argmax("b_short")
    any_ok = tokw.notnull().any("b_short")
    best = ds[["fleet_tok_per_watt", "gain"]].isel(b_short=idx)
    b = ds["b_short"].isel(b_short=idx).astype(float)
    out = {
        "best_b_short": b.where(any_ok).drop_vars("b_short", errors="ignore"),
        "best_gain": best["gain"].where(any_ok).drop_vars("b_short", errors="ignore"),
        "best_fleet_tok_per_watt": best["fleet_tok_per_watt"]
        .where(any_ok)
        .drop_vars("b_short", errors="ignore"),
    }
    for k, v in out.items():
        ds[k] = v.variable
        ds[k].attrs = _attrs(VARIABLES[k])
    return ds


def _assemble(spec: FleetSpec, problem: Problem, results: dict, extra: dict, table) -> xr.Dataset:
    dims = problem.dims
    data = {k: _variable(k, dims, v, table) for k, v in results.items()}
    coords = _coords(spec)
    coords["workload"] = xr.Variable(
        "workload", np.array(problem.axes[dims.index("workload")].coord, dtype=str)
    )
    ds = xr.Dataset(data, coords=coords, attrs=_provenance(spec, extra))
    if "fleet_tok_per_watt" in ds and table is VARIABLES:
        ds = _best_over_b_short(ds)
    if spec.single_workload:
        ds = ds.isel(workload=0)
    ds["workload"].attrs = _attrs(COORDS["workload"])
    order = [d for d in spec.axes]
    return ds.transpose(*order, ...)


# --------------------------------------------------------------------------------------------
# The Python API


def fleet(
    spec,
    precision: str | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Evaluate a fleet spec (path, TOML text, dict or FleetSpec) on its whole grid.

    Returns an ``xarray.Dataset`` with one dimension per axis (spec order; ``workload`` too when
    several are given) and the variables of :data:`VARIABLES`; infeasible points are NaN with
    ``feasible`` 0. Integer replica counts (``min_servers_int``) throughout.
    """
    spec = load_fleet_spec(spec, precision=precision)
    problem = build_problem(spec)
    chunk = chunk_size or DEFAULT_CHUNK
    results, extra = evaluate_timed(problem, chunk_size=chunk, progress=progress)
    return _assemble(spec, problem, results, extra, VARIABLES)


def _grad_point(wrt):
    def make(prepare, make_gpu):
        def point(raw):
            xs = {k: raw[k] for k in wrt}

            def value(xs_):
                out = kfleet.fleet_point(prepare({**raw, **xs_}), make_gpu, relaxed=True)
                return out["fleet_tok_per_watt"], out

            jac, out = jax.jacfwd(value, has_aux=True)(xs)
            t = out["fleet_tok_per_watt"]
            res = {k: out[k] for k in GRAD_VARIABLES}
            for k in wrt:
                res[f"elasticity_{k}"] = jac[k] * xs[k] / t
            return res

        return point

    return make


def fleet_grad(
    spec,
    wrt=None,
    precision: str | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Elasticities of the relaxed two-pool fleet tok/W, by forward-mode autodiff.

    ``wrt``: names from :data:`GRAD_WRT` (a sequence or a comma-separated string; default
    ``b_short``, ``arrival_rate``, ``slo``).
    Returns ``fleet_tok_per_watt``, ``homogeneous_tok_per_watt`` and ``gain`` of the relaxed
    model (continuous slots B_max, real server counts from ``min_servers`` with implicit
    derivatives, replicas = servers / slots) and ``elasticity_<name> = d ln T / d ln x``.
    """
    spec = load_fleet_spec(spec, precision=precision)
    if isinstance(wrt, str):
        wrt = tuple(w.strip() for w in wrt.split(",") if w.strip())
    wrt = DEFAULT_WRT if wrt is None else tuple(wrt)
    for name in wrt:
        if name not in GRAD_WRT:
            raise SpecError("wrt", f"{name!r}; allowed: {', '.join(GRAD_WRT)}")
    if not wrt:
        raise SpecError("wrt", f"empty; allowed: {', '.join(GRAD_WRT)}")
    problem = build_problem(spec, relaxed=True, point_fn=_grad_point(wrt))
    chunk = chunk_size or DEFAULT_CHUNK
    results, extra = evaluate_timed(problem, chunk_size=chunk, progress=progress)
    extra.update(relaxed=1, wrt=", ".join(wrt))
    return _assemble(spec, problem, results, extra, GRAD_VARIABLES)


# --------------------------------------------------------------------------------------------
# Summary


PAPER = {"routing": 2.5, "generation": 1.7, "combined": 4.25}


def _cell(v) -> str:
    return f"{v:g}" if isinstance(v, float | np.floating) else str(v)


def _fmt(x, spec=".3g", suffix="x") -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:{spec}}{suffix}"


def gains(ds: xr.Dataset, baseline: str | None = None, upgrade: str | None = None) -> xr.Dataset:
    """Routing, generation and combined gains per slice (every dim but b_short and the GPUs).

    routing_<gpu> = best two-pool tok/W over homogeneous tok/W with both pools on that GPU;
    generation = homogeneous tok/W on ``upgrade`` over that on ``baseline``; combined = best
    two-pool tok/W on ``upgrade`` over homogeneous on ``baseline``; product = routing_baseline x
    generation; ratio = combined / product (= routing_upgrade / routing_baseline).
    """
    baseline = baseline or ds.attrs.get("summary_baseline") or str(ds["gpu_long"].values[0])
    if upgrade is None:
        upgrade = ds.attrs.get("summary_upgrade") or None
    out = {}

    def on(gs, gl):
        return {"gpu_short": gs, "gpu_long": gl}

    shorts = set(ds["gpu_short"].values.tolist())
    homog_a = ds["homogeneous_tok_per_watt"].sel(gpu_long=baseline).isel(gpu_short=0, b_short=0)
    if baseline in shorts:
        out["b_short_baseline"] = ds["best_b_short"].sel(on(baseline, baseline))
        out["routing_baseline"] = ds["best_gain"].sel(on(baseline, baseline))
    if upgrade:
        homog_b = ds["homogeneous_tok_per_watt"].sel(gpu_long=upgrade).isel(gpu_short=0, b_short=0)
        out["generation"] = homog_b / homog_a
        if upgrade in shorts:
            out["b_short_upgrade"] = ds["best_b_short"].sel(on(upgrade, upgrade))
            out["routing_upgrade"] = ds["best_gain"].sel(on(upgrade, upgrade))
            best_b = ds["best_fleet_tok_per_watt"].sel(on(upgrade, upgrade))
            out["combined"] = best_b / homog_a
            if "routing_baseline" in out:
                out["product"] = out["routing_baseline"] * out["generation"]
                out["ratio"] = out["combined"] / out["product"]
    res = xr.Dataset({k: v.reset_coords(drop=True) for k, v in out.items()})
    res.attrs.update(baseline=baseline, upgrade=upgrade or "")
    return res


def summarise(ds: xr.Dataset, seconds: float | None = None, max_rows: int = 40) -> str:
    """The printed summary of ``sweep fleet``: sizes, and routing x GPU-generation gains."""
    a = ds.attrs
    lines = [
        f"{a.get('spec_name', '')}: fleet sweep, {a.get('pool_mode', '')} pools, "
        f"{a.get('precision', '')}, dims {dict(ds.sizes)}"
    ]
    n = int(np.prod([ds.sizes[d] for d in ds["fleet_tok_per_watt"].dims]))
    if seconds is not None:
        lines.append(f"points: {n:,}  seconds: {seconds:.2f}  points/s: {n / seconds:,.0f}")
    else:
        lines.append(f"points: {n:,}")
    feas = ds["feasible"].values.astype(bool)
    lines.append(f"feasible two-pool points: {feas.mean():.1%}")
    wl = ds["workload"].values
    descs = np.atleast_1d(ds["workload_description"].values)
    means = np.atleast_1d(ds["workload_mean_tokens"].values)
    for name, d, m in zip(np.atleast_1d(wl), descs, means, strict=True):
        lines.append(f"workload {name}: {d} (mean {m:,.0f} tokens)")
    rej = ds["rejected_share"]
    rej_txt = ", ".join(
        f"{r:.2%} at w_long {int(w):,}"
        for w, r in zip(ds["w_long"].values, _over(rej, "w_long"), strict=True)
    )
    lines.append(f"rejected (longer than w_long, served by neither fleet): {rej_txt}")
    slos = ", ".join(f"{s:g}" for s in ds["slo"].values)
    lines.append(
        f"SLO: P{100 * float(a.get('quantile', 0.99)):g} queueing wait <= {slos} s, "
        f"utilisation <= {float(a.get('max_util', 0.85)):g}"
    )
    if not feas.any():
        return "\n".join(lines)

    g = gains(ds)
    base, up = g.attrs["baseline"], g.attrs["upgrade"]
    lines.append("")
    if "routing_baseline" not in g:
        lines.append(f"(no routing gain: {base} is not on the gpu_short axis)")
        return "\n".join(lines)
    slice_dims = list(g["routing_baseline"].dims)
    stacked = g.stack(slice=slice_dims) if slice_dims else g.expand_dims("slice")
    rows = stacked.sizes["slice"]
    shown = [d for d in slice_dims if ds.sizes[d] > 1]
    fixed = [f"{d}={_cell(ds[d].values[0])}" for d in slice_dims if ds.sizes[d] == 1]
    lines.append(
        f"gains at the best b_short of each slice: A = {base}" + (f", B = {up}" if up else "")
    )
    if fixed:
        lines.append("  (" + ", ".join(fixed) + ")")
    cols = [
        ("b* A", "b_short_baseline", ".0f", ""),
        ("route A", "routing_baseline", ".3g", "x"),
        ("b* B", "b_short_upgrade", ".0f", ""),
        ("route B", "routing_upgrade", ".3g", "x"),
        ("gen B/A", "generation", ".3g", "x"),
        ("combined", "combined", ".3g", "x"),
        ("routeA*gen", "product", ".3g", "x"),
        ("comb/prod", "ratio", ".3f", ""),
    ]
    cols = [c for c in cols if c[1] in stacked]
    if rows <= max_rows:
        labels = [
            " ".join(_cell(stacked[d].values[i]) for d in shown) or "all" for i in range(rows)
        ]
        head = " ".join(shown) or "slice"
        width = max(len(head), *(len(s) for s in labels))
        lines.append(f"  {head:<{width}} " + " ".join(f"{c[0]:>10}" for c in cols))
        for i, lab in enumerate(labels):
            cells = [_fmt(float(stacked[c[1]].values[i]), c[2], c[3]) for c in cols]
            lines.append(f"  {lab:<{width}} " + " ".join(f"{x:>10}" for x in cells))
    lines.append("")

    def stat(values):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if not v.size:
            return None
        return float(np.median(v)), float(v.min()), float(v.max())

    lines.append(
        f"over {rows} slice(s), median [min .. max]; paper (FleetOpt arXiv 2603.16514, "
        "1/W Law arXiv 2603.17280) in brackets:"
    )
    for label, key, paper in (
        (f"routing gain, two-pool over homogeneous on A ({base})", "routing_baseline", "routing"),
        (f"routing gain on B ({up})", "routing_upgrade", "routing"),
        ("GPU generation gain, homogeneous B over homogeneous A", "generation", "generation"),
        ("combined, two-pool on B over homogeneous on A", "combined", "combined"),
        ("product routing(A) x generation", "product", "combined"),
    ):
        st = stat(stacked[key].values) if key in stacked else None
        if st is None:
            continue
        med, lo, hi = st
        lines.append(
            f"  {label}: {_fmt(med)} [{_fmt(lo)} .. {_fmt(hi)}]  (paper ~{PAPER[paper]:g}x)"
        )
    st = stat(stacked["ratio"].values) if "ratio" in stacked else None
    if st is not None:
        med, lo, hi = st
        verdict = "multiply (within 5%)" if abs(med - 1) < 0.05 else "do not multiply"
        lines.append(
            f"  combined / product: {med:.3f} [{lo:.3f} .. {hi:.3f}]: the gains {verdict} "
            "(the ratio is routing(B) / routing(A))"
        )
    for dim in ("workload", "arrival_rate", "w_long"):
        if dim not in shown:
            continue
        parts = []
        for v in ds[dim].values:
            sub = g.sel({dim: v})
            cells = []
            for key, lab in (
                ("routing_baseline", "route A"),
                ("generation", "gen"),
                ("combined", "combined"),
                ("ratio", "comb/prod"),
            ):
                if key in sub:
                    st = stat(sub[key].values)
                    if st is not None:
                        fmt = f"{st[0]:.3f}" if key == "ratio" else _fmt(st[0])
                        cells.append(f"{lab} {fmt}")
            parts.append(f"{_cell(v)}: " + ", ".join(cells))
        lines.append(f"  median by {dim}: " + "; ".join(parts))
    ttft = [
        (p, float(np.nanmax(ds[f"p99_ttft_{p}"].values)))
        for p in ("short", "long")
        if np.isfinite(ds[f"p99_ttft_{p}"].values).any()
    ]
    if ttft:
        lines.append(
            "P99 TTFT (quantile wait + prefill of the quantile prompt), worst over the grid: "
            + ", ".join(f"{p} pool {v:.3g} s" for p, v in ttft)
            + " (the SLO bounds the wait only; kernels/fleet.py)"
        )
    cost = ds["cost_per_mtok"].values
    if np.isfinite(cost).any():
        lines.append(
            f"cost per million output tokens: {np.nanmin(cost):.4g} .. {np.nanmax(cost):.4g} USD"
        )
    else:
        lines.append("cost per million output tokens: n/a (no GPU prices; add a [prices] table)")
    return "\n".join(lines)


def _over(da: xr.DataArray, dim: str) -> np.ndarray:
    """Max of ``da`` over every dim but ``dim`` (NaN-skipping), one value per ``dim``."""
    other = [d for d in da.dims if d != dim]
    return da.max(other).values if other else da.values


# --------------------------------------------------------------------------------------------
# Figure


def plot_gain(ds: xr.Dataset, path, slo: float | None = None) -> Path:
    """Gain against b_short, one line per (workload, arrival rate); a panel per GPU pair and
    w_long (at most 6 panels: same-GPU pairs first), at one SLO (default: the middle value)."""
    from sweep.plots import _pyplot

    plt = _pyplot()
    gain = ds["gain"]
    if slo is None:
        slos = ds["slo"].values
        slo = float(slos[len(slos) // 2])
    gain = gain.sel(slo=slo, method="nearest")
    pairs = [(s, s) for s in ds["gpu_short"].values if s in ds["gpu_long"].values]
    pairs += [(s, lg) for s in ds["gpu_short"].values for lg in ds["gpu_long"].values if s != lg]
    panels = [(p, w) for p in pairs for w in ds["w_long"].values][:6]
    ncol = min(len(panels), 3)
    nrow = math.ceil(len(panels) / ncol)
    fig, axs = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), dpi=120, squeeze=False)
    x = ds["b_short"].values
    for ax, ((gs, gl), w) in zip(axs.ravel(), panels, strict=False):
        sub = gain.sel(gpu_short=gs, gpu_long=gl, w_long=w)
        keep = [d for d in sub.dims if d not in ("b_short", "workload", "arrival_rate")]
        if keep:
            sub = sub.isel({d: 0 for d in keep})
        lines = sub.expand_dims([d for d in ("workload",) if d not in sub.dims])
        lines = lines.stack(series=[d for d in ("workload", "arrival_rate") if d in lines.dims])
        wl_scalar = ds["workload"].values if "workload" not in ds.dims else None
        for i in range(lines.sizes["series"]):
            y = lines.isel(series=i).transpose("b_short").values
            idx = lines["series"].values[i]
            idx = idx if isinstance(idx, tuple) else (idx,)
            label = "/".join(str(v) for v in idx)
            if wl_scalar is not None and not label.startswith(str(wl_scalar)):
                label = f"{wl_scalar}/{label}"
            ok = np.isfinite(y)
            if ok.any():
                ax.plot(x[ok], y[ok], marker="o", ms=3, label=f"{label} req/s")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("b_short (tokens)")
        ax.set_ylabel("gain (two-pool / homogeneous tok/W)")
        ax.set_title(f"{gs} + {gl}, w_long {int(w):,}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axs.ravel()[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"{ds.attrs.get('spec_name', '')}: routing gain, SLO {slo:g} s", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# CLI


def cmd_fleet(args) -> int:
    from sweep.cli import EXIT_OK, default_output
    from sweep.dataset import write_netcdf

    spec = load_fleet_spec(args.spec, precision=args.precision)
    out = Path(args.output) if args.output else default_output(spec.name)
    t0 = time.perf_counter()
    ds = fleet(spec, chunk_size=args.chunk_size, progress=None if not args.quiet else False)
    write_netcdf(ds, out)
    seconds = time.perf_counter() - t0
    print(summarise(ds, seconds))
    print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot_gain(ds, out.with_suffix('.png'))}")
    return EXIT_OK


def summarise_grad(ds: xr.Dataset, seconds: float | None = None) -> str:
    """Median [min .. max] of every elasticity of a :func:`fleet_grad` dataset."""
    tokw = ds["fleet_tok_per_watt"]
    n = int(tokw.size)
    lines = [
        f"{ds.attrs.get('spec_name', '')}: fleet elasticities (relaxed model), "
        f"{ds.attrs.get('precision', '')}, dims {dict(ds.sizes)}",
        f"points: {n:,}" + (f"  seconds: {seconds:.2f}" if seconds is not None else ""),
    ]
    for name in ds.data_vars:
        if not str(name).startswith("elasticity_"):
            continue
        v = ds[name].values
        v = v[np.isfinite(v)]
        if not v.size:
            lines.append(f"  {name}: no finite values")
            continue
        lines.append(f"  {name}: median {np.median(v):+.4g} [{v.min():+.4g} .. {v.max():+.4g}]")
    lines.append("(d ln fleet_tok_per_watt / d ln x; kernels/fleet.py documents the relaxation)")
    return "\n".join(lines)


def cmd_fleet_grad(args) -> int:
    """``sweep grad`` on a fleet spec (dispatched from sweep.grad): elasticities to netCDF."""
    from sweep.dataset import write_netcdf

    spec = load_fleet_spec(args.spec, precision=getattr(args, "precision", None))
    wrt = getattr(args, "wrt", None)
    output = getattr(args, "output", None)
    out = Path(output) if output else Path("outputs") / f"{spec.name}.grad.nc"
    t0 = time.perf_counter()
    quiet = getattr(args, "quiet", False)
    ds = fleet_grad(
        spec,
        wrt=wrt,
        chunk_size=getattr(args, "chunk_size", None),
        progress=None if not quiet else False,
    )
    write_netcdf(ds, out)
    print(summarise_grad(ds, time.perf_counter() - t0))
    print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    """Add ``sweep fleet SPEC [-o PATH]`` to the ``sweep`` command line."""
    from sweep.cli import positive_int

    p = subparsers.add_parser(
        "fleet", help="size two-pool and homogeneous fleets over a grid; write a netCDF dataset"
    )
    p.add_argument("spec", help='fleet spec (TOML file with mode = "fleet")')
    p.add_argument("-o", "--output", help="output path (default outputs/<name>.nc)")
    p.add_argument("--precision", choices=PRECISIONS, help="override the spec's (float64)")
    p.add_argument("--chunk-size", type=positive_int, help="points per compiled chunk")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--plot", action="store_true", help="also plot gain against b_short (PNG)")
    p.set_defaults(fn=cmd_fleet)
