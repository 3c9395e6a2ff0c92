"""Elasticities of tok/W by automatic differentiation (MODEL.md section 3).

    elasticity_x = d ln(tok/W) / d ln(x) = x * d ln(tok/W) / dx

at every grid point, for every continuous input x, by reverse-mode autodiff (``jax.grad``)
vmapped over the grid through the generic engine: the point function is the spec's
``prepare`` followed by the kernel, and x is an input *after* ``prepare`` (e.g. ``flops`` is
the peak of the point's dtype, ``sparsity`` the active expert fraction, given or default).

Gradients are those of the continuous relaxation (``relaxed=True``: floor and ceil dropped,
so B_max = kv_budget / (kv_tok_gpu W) and n_max = min(max_slots calib_ctx, kv_blocks blk) / W).
floor() has zero derivative almost everywhere; the relaxation is what makes the context
elasticity exactly -1 where the 1/W law holds with flat power (KV-bound, e.g. power_k = 0).
At kinks the relaxed model is not differentiable and JAX returns one-sided or averaged values:
max(t_mem, t_comp) at a tie, the min() of a max_seqs cap or of the two calibrated limits at a
tie, and the activity power's min(1, ...) at 1. tok_per_watt and feasible are those of the
exact model; points infeasible there are NaN.

``sparsity`` is NaN for dense models (n_experts == 0): the input does not exist there, and a 0
would rank it as a lever that does not move tok/W. ``tdp`` is an input only with
power = "activity", the logistic curve's power_* only with power = "logistic" (the default).

Precision: the spec's (float32 unless it says float64, or ``precision=``). float64
elasticities match central finite differences of the relaxed model to ~1e-9; float32 ones are
good to ~1e-4 (ln(tok/W) is formed in float32; see tests/test_grad.py).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sweep.errors import SpecError
from sweep.spec import GridSpec, load_spec

# name: what it is (long_name of elasticity_<name>)
ROOFLINE_WRT = {
    "context": "context window W",
    "fill": "mean fill of the window by KV history",
    "mem_bw": "peak memory bandwidth",
    "mem_capacity": "GPU memory capacity",
    "flops": "peak dense tensor FLOP/s of the point's dtype",
    "bw_eff": "sustained fraction of peak memory bandwidth",
    "flops_eff": "sustained fraction of peak FLOP/s",
    "mem_util": "usable fraction of GPU memory",
    "t_layer": "per-layer kernel overhead",
    "power_idle": "logistic power curve: idle power",
    "power_nominal": "logistic power curve: saturated power",
    "power_k": "logistic power curve: steepness",
    "power_x0": "logistic power curve: midpoint",
    "sparsity": "active routed-expert fraction (MoE; NaN for dense models)",
    "tdp": "thermal design power (activity power model)",
}
CALIBRATED_WRT = {
    "context": "context window W",
    "fill": "mean fill of the window by KV history",
    "w_s": "calibrated base iteration time",
    "h_s": "calibrated per-sequence time at calib_ctx",
    "calib_ctx": "calibration context",
    "max_slots": "calibrated concurrency slots at calib_ctx",
    "kv_blocks": "KV-cache blocks",
    "power_idle": "logistic power curve: idle power",
    "power_nominal": "logistic power curve: saturated power",
    "power_k": "logistic power curve: steepness",
    "power_x0": "logistic power curve: midpoint",
}
LOGISTIC = ("power_idle", "power_nominal", "power_k", "power_x0")
DEFAULT_GRAD_CHUNK = 1 << 18  # points per compiled chunk: the gradient keeps its tape


def allowed_wrt(spec: GridSpec) -> tuple[str, ...]:
    """The continuous inputs of the spec's model, in a fixed order."""
    if spec.mode == "calibrated":
        return tuple(CALIBRATED_WRT)
    if spec.params["power"] == "activity":
        return tuple(k for k in ROOFLINE_WRT if k not in LOGISTIC)
    return tuple(k for k in ROOFLINE_WRT if k != "tdp")


def parse_wrt(spec: GridSpec, wrt) -> tuple[str, ...]:
    """Names to differentiate by: None = all allowed; a comma-separated string or a sequence."""
    allowed = allowed_wrt(spec)
    if wrt is None:
        return allowed
    names = [w.strip() for w in wrt.split(",")] if isinstance(wrt, str) else list(wrt)
    names = [n for n in names if n]
    if not names:
        raise SpecError("wrt", f"no names given; allowed: {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise SpecError(
                "wrt",
                f"{name!r} is not a continuous input of this {spec.mode} spec; "
                f"allowed: {', '.join(allowed)}",
            )
    return tuple(dict.fromkeys(names))


def elasticity_point_function(spec: GridSpec, names):
    """raw inputs -> elasticity_<name> (relaxed model), tok_per_watt and feasible (exact)."""
    from sweep.modes import point_function

    prepare, relaxed_kernel = point_function(spec, relaxed=True)
    _, exact_kernel = point_function(spec, relaxed=False)
    names = tuple(names)

    def log_tok_per_watt(x, p):
        return jnp.log(relaxed_kernel({**p, **x})["tok_per_watt"])

    def point(raw):
        p = prepare(raw)
        exact = exact_kernel(p)
        x = {k: p[k] for k in names}
        g = jax.grad(log_tok_per_watt)(x, p)
        feasible = exact["feasible"]
        out = {}
        for k in names:
            e = jnp.where(feasible, x[k] * g[k], jnp.nan)
            if k == "sparsity":
                e = jnp.where(p["n_experts"] > 0, e, jnp.nan)
            out[f"elasticity_{k}"] = e
        out["tok_per_watt"] = exact["tok_per_watt"]
        out["feasible"] = feasible
        return out

    return point


def build_grad_problem(spec: GridSpec, names):
    from sweep.engine import Problem
    from sweep.modes import build_axes, scalar_inputs

    return Problem(
        axes=build_axes(spec),
        constants=scalar_inputs(spec),
        point_fn=elasticity_point_function(spec, names),
        dtype=np.dtype(spec.precision),
    )


def grad(
    spec,
    wrt=None,
    precision: str | None = None,
    chunk_size: int | None = None,
    progress: bool | None = False,
) -> xr.Dataset:
    """Elasticities of tok/W at every point of a spec's grid (see the module docstring).

    Returns a Dataset with ``elasticity_<name>`` (units "1") for each name in ``wrt`` (default:
    every continuous input of the spec's mode), plus ``tok_per_watt`` and ``feasible`` of the
    exact model. Unknown names raise SpecError naming ``wrt`` and the allowed names.
    """
    from sweep.dataset import axis_coords, data_variable, provenance
    from sweep.engine import evaluate_timed
    from sweep.fleet_sizing import fleet_grad, is_fleet_spec  # fleet specs: sweep/fleet_sizing.py

    if is_fleet_spec(spec):
        return fleet_grad(spec, wrt, precision=precision, chunk_size=chunk_size, progress=progress)
    spec = load_spec(spec, precision=precision)
    names = parse_wrt(spec, wrt)
    problem = build_grad_problem(spec, names)
    chunk_size = chunk_size or DEFAULT_GRAD_CHUNK
    results, run_attrs = evaluate_timed(problem, chunk_size=chunk_size, progress=progress)
    dims = tuple(spec.axes)
    table = CALIBRATED_WRT if spec.mode == "calibrated" else ROOFLINE_WRT
    data = {
        f"elasticity_{k}": xr.Variable(
            dims,
            results[f"elasticity_{k}"],
            {
                "units": "1",
                "long_name": f"elasticity of tok/W with respect to {table[k]}: "
                f"d ln(tok_per_watt) / d ln({k}), continuous relaxation",
            },
        )
        for k in names
    }
    for k in ("tok_per_watt", "feasible"):
        data[k] = data_variable(k, dims, results[k])
    ds = xr.Dataset(data, coords=axis_coords(spec), attrs=provenance(spec))
    ds.attrs.update(
        title=f"1/W elasticities: {spec.name}",
        grad_wrt=",".join(names),
        grad_method=(
            "reverse-mode autodiff (jax.grad) of ln(tok/W) of the continuous relaxation "
            "(floor and ceil dropped), vmapped over the grid; NaN where the exact model is "
            "infeasible; sparsity NaN for dense models"
        ),
        **run_attrs,
    )
    return ds


# ---------------------------------------------------------------- summary and CLI


def lever_medians(ds: xr.Dataset, by=("gpu", "model")):
    """(group labels, names, median |elasticity| array (groups, names), signed medians)."""
    names = [v[len("elasticity_") :] for v in ds.data_vars if v.startswith("elasticity_")]
    by = [d for d in by if d in ds.dims]
    first = ds[f"elasticity_{names[0]}"]
    rest = [d for d in first.dims if d not in by]
    groups = math.prod(ds.sizes[d] for d in by) if by else 1
    absmed = np.empty((groups, len(names)))
    med = np.empty((groups, len(names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for j, k in enumerate(names):
            v = ds[f"elasticity_{k}"].transpose(*by, *rest).values.reshape(groups, -1)
            v = v.astype(np.float64)
            absmed[:, j] = np.nanmedian(np.abs(v), axis=1)
            med[:, j] = np.nanmedian(v, axis=1)
    if by:
        index = np.indices([ds.sizes[d] for d in by]).reshape(len(by), -1).T
        labels = [
            tuple(str(ds[d].values[i]) for d, i in zip(by, row, strict=True)) for row in index
        ]
    else:
        labels = [()]
    return by, labels, names, absmed, med


def summarise(ds: xr.Dataset, seconds: float | None = None, top: int = 4, max_rows: int = 40):
    feasible = ds["feasible"].values.astype(bool)
    lines = [
        f"{ds.attrs.get('spec_name', '')}: elasticities d ln(tok/W) / d ln(x), "
        f"{ds.attrs.get('mode', '')} mode, {ds.attrs.get('precision', '')}, "
        f"dims {dict(ds.sizes)}",
        f"points: {feasible.size:,}  feasible: {feasible.mean():.1%}"
        + (f"  seconds: {seconds:.2f}" if seconds is not None else ""),
    ]
    if not feasible.any():
        return "\n".join(lines)
    by, labels, names, absmed, med = lever_medians(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        overall = {k: ds[f"elasticity_{k}"].values[feasible].astype(np.float64) for k in names}
        o_abs = {
            k: np.nanmedian(np.abs(v)) if np.isfinite(v).any() else np.nan
            for k, v in overall.items()
        }
        o_med = {k: np.nanmedian(v) if np.isfinite(v).any() else np.nan for k, v in overall.items()}
    ranked = sorted(names, key=lambda k: -np.nan_to_num(o_abs[k], nan=-1.0))
    lines.append("")
    lines.append("levers over all feasible points (ranked by median |elasticity|):")
    lines.append(f"  {'input':<14} {'median':>9} {'median |e|':>11}")
    for k in ranked:
        if np.isnan(o_abs[k]):
            lines.append(f"  {k:<14} {'n/a':>9} {'n/a':>11}  (no point has it: dense models)")
        else:
            lines.append(f"  {k:<14} {o_med[k]:>9.4f} {o_abs[k]:>11.4f}")
    lines.append("")
    head = "  ".join(f"{b:<16}" for b in by)
    lines.append(f"top levers by median |elasticity| per {' and '.join(by) or 'grid'}:")
    lines.append(f"{head}  " + "  ".join(f"{f'#{i + 1}':<20}" for i in range(top)))
    shown = 0
    for g, label in enumerate(labels):
        row = absmed[g]
        if not np.isfinite(row).any():
            continue
        if shown == max_rows:
            lines.append(f"... {len(labels) - shown} more (all in the dataset)")
            break
        order = [j for j in np.argsort(-np.nan_to_num(row, nan=-1.0)) if np.isfinite(row[j])]
        cells = [f"{names[j]} {med[g, j]:+.3f}" for j in order[:top]]
        lines.append(
            "  ".join(f"{v:<16}" for v in label) + "  " + "  ".join(f"{c:<20}" for c in cells)
        )
        shown += 1
    lines.append("(cells: input and its median elasticity, signed)")
    return "\n".join(lines)


def cmd_grad(args) -> int:
    from sweep.dataset import write_netcdf
    from sweep.fleet_sizing import (  # fleet specs: sweep/fleet_sizing.py
        cmd_fleet_grad,
        is_fleet_spec,
    )

    if is_fleet_spec(args.spec):
        return cmd_fleet_grad(args)
    spec = load_spec(args.spec, precision=args.precision)
    names = parse_wrt(spec, args.wrt)
    out = Path(args.output) if args.output else Path("outputs") / f"{spec.name}.grad.nc"
    t0 = time.perf_counter()
    ds = grad(
        spec, wrt=names, chunk_size=args.chunk_size, progress=None if not args.quiet else False
    )
    write_netcdf(ds, out)
    print(summarise(ds, time.perf_counter() - t0))
    print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    from sweep.cli import positive_int

    p = subparsers.add_parser(
        "grad", help="elasticities d ln(tok/W) / d ln(x) at every grid point, by autodiff"
    )
    p.add_argument("spec", help="grid spec (TOML file)")
    p.add_argument("--wrt", help="comma-separated inputs (default: every continuous input)")
    p.add_argument("-o", "--output", help="output path (default outputs/<name>.grad.nc)")
    p.add_argument("--precision", choices=("float32", "float64"), help="override the spec's")
    p.add_argument("--chunk-size", type=positive_int, help="points per compiled chunk")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_grad)
