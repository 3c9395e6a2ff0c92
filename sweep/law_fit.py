"""The 1/W law as numbers (MODEL.md section 3): slopes of log2(tok/W) against log2(context).

``law(ds_or_spec)`` analyses every slice of a sweep over the dimensions other than ``over``
(default ``context``) at once, vectorised with numpy (no Python loop over slices):

slope, r2, points
    Least-squares slope of log2(var) against log2(over) over the slice's feasible points
    (``feasible`` true, var finite and > 0), its coefficient of determination and the number
    of points fitted. NaN with fewer than 2 points; r2 is NaN where var is constant.
local_slope
    The slope between neighbouring contexts, on the interval dimension ``<over>_interval``
    whose coordinate is the geometric midpoint sqrt(lower * upper) of the interval, with
    ``<over>_lower`` and ``<over>_upper`` as coordinates on it. NaN where an end is infeasible.
law_from, law_to, law_ratio
    The widest (largest law_to / law_from) contiguous run of intervals with
    |local_slope + 1| < tolerance (0.1); ties go to the shortest contexts. NaN when none.
cause, local_cause
    Why the law bends (CF flag_values / flag_meanings; int8, because strings do not compress).
    ``local_cause`` classifies every interval: 0 ``law`` where |local_slope + 1| < tolerance,
    else the first that applies of

    6 ``infeasible``  an end of the interval is infeasible;
    3 ``power``       the power term dominates the deviation. tok/W = n / (tp t_iter P), so on
                      an interval local_slope + 1 = d_tps + d_P with d_P = -s_P (s_x: the
                      log2-log2 slope of x over the interval) and d_tps = s_n - s_t + 1 the
                      throughput term; power when |d_P| >= |d_tps|. As |d| >= 0.1 this means
                      the power changes by at least 2**0.05 - 1 = 3.5% per doubling of context:
                      the logistic curve off its plateau at small batches (or activity power
                      following the roofline regime);
    2 ``cap``         otherwise, a concurrency cap pins the batch at an end: concurrency ==
                      max_seqs (params.max_seqs > 0, read from the spec kept in the dataset);
    5 ``rounding``    otherwise, a saturated batch (batch coordinate 0 or absent) whose
                      concurrency term dominates the throughput term (|s_n + 1| > |s_t|): the
                      integer batch floor(B_max) and the ceil(W / blk) block reservation do
                      not follow 1/W where B_max is small (or on a finely spaced context grid);
    1 ``compute``     otherwise, compute-bound (``bound`` == compute, t_comp > t_mem) at an end;
    4 ``weights``     otherwise: the iteration time that does not scale with the KV traffic
                      (weights streamed, including the expert coverage of MoE models, and the
                      per-layer overhead; the base time W_s in calibrated mode) dominates: a
                      fixed batch whose KV read is too small to make t_iter grow as W, or a
                      saturated MoE batch streaming fewer experts at longer contexts.

    The calibrated ``max_slots`` limit is not a cause: floor(max_slots calib_ctx / W) scales as
    1/W like the KV-block limit, so it never bends the law (only its floor does: ``rounding``).
    The per-slice ``cause`` is 0 ``law`` where the law holds on the slice, i.e. law_ratio >=
    min(min_ratio, the span of the context axis) with min_ratio = 16; otherwise the most
    frequent physical local cause (codes 1-5) among its failing intervals (ties: the lowest
    code); ``infeasible`` where the failing intervals are all infeasible (the law holds
    wherever the slice is feasible, over too short a range) or with < 2 feasible points.
    Cause variables need ``concurrency``, ``iter_time`` and ``power`` (datasets of
    ``sweep run``); without them they are omitted.
    The power term is used for var == tok_per_watt only.

The output dataset keeps the input's coordinates without ``over``, its attributes, and adds
``law_over``, ``law_var``, ``law_tolerance``, ``law_min_ratio``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import xarray as xr

from sweep.errors import SpecError

TOLERANCE = 0.1  # |local slope + 1| below this: the law holds on an interval
MIN_RATIO = 16.0  # the law holds on a slice over at least this range of contexts

CAUSES = ("law", "compute", "cap", "power", "weights", "rounding", "infeasible")
LAW, COMPUTE, CAP, POWER, WEIGHTS, ROUNDING, INFEASIBLE = range(len(CAUSES))
CAUSE_COMMENT = (
    "law: the law holds; compute: compute-bound (t_comp > t_mem); cap: the max_seqs cap pins "
    "the batch; power: the power curve off its plateau dominates the deviation; weights: "
    "iteration time not scaling with KV traffic (weights, expert coverage, per-layer overhead, "
    "calibrated W_s); rounding: integer batch and block reservation at small B_max; "
    "infeasible: an infeasible end (interval); no physical cause, only infeasible intervals, "
    "or fewer than two feasible points (slice). "
    "Precise definitions: sweep/law_fit.py"
)


# ---------------------------------------------------------------- input


def input_dataset(ds_or_spec, precision: str | None = None) -> xr.Dataset:
    """An xarray Dataset as is; a ``.nc`` path opened; anything else a spec, run first."""
    if isinstance(ds_or_spec, xr.Dataset):
        return ds_or_spec
    if isinstance(ds_or_spec, str | Path) and str(ds_or_spec).endswith(".nc"):
        from sweep.dataset import open_dataset

        with open_dataset(ds_or_spec) as ds:
            return ds.load()
    from sweep.api import run

    return run(ds_or_spec, precision=precision, progress=False)


def _max_seqs(ds: xr.Dataset) -> float:
    """params.max_seqs of the spec the dataset was run from (0: no cap)."""
    try:
        table = tomllib.loads(ds.attrs.get("spec", ""))
        return float(table.get("params", {}).get("max_seqs", 0))
    except (tomllib.TOMLDecodeError, TypeError, ValueError, AttributeError):
        return 0.0


# ---------------------------------------------------------------- numerics


def _log2(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok, np.log2(np.where(ok, values, 1.0)), np.nan)


def _local(ly: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Slopes between neighbours along the last axis (NaN where an end is NaN)."""
    return (ly[..., 1:] - ly[..., :-1]) / dx


def fit(x: np.ndarray, ly: np.ndarray):
    """Least-squares slope, r2 and point count of ly (NaN = unused) against x, last axis."""
    ok = np.isfinite(ly)
    n = ok.sum(-1)
    safe_n = np.maximum(n, 1)
    xb = np.broadcast_to(x, ly.shape)
    mx = np.where(ok, xb, 0.0).sum(-1) / safe_n
    my = np.where(ok, ly, 0.0).sum(-1) / safe_n
    dxm = np.where(ok, xb - mx[..., None], 0.0)
    dym = np.where(ok, ly - my[..., None], 0.0)
    sxx = (dxm * dxm).sum(-1)
    sxy = (dxm * dym).sum(-1)
    syy = (dym * dym).sum(-1)
    fitted = (n >= 2) & (sxx > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(fitted, sxy / np.where(fitted, sxx, 1.0), np.nan)
        good = fitted & (syy > 0)
        r2 = np.where(good, sxy * sxy / np.where(good, sxx * syy, 1.0), np.nan)
    return slope, np.minimum(r2, 1.0), n


def law_range(x: np.ndarray, good: np.ndarray):
    """(from index, to index) of the widest run of good intervals along the last axis, or -1.

    x: log2 of the m coordinates; good: (..., m - 1) booleans. Width is x[to] - x[from].
    """
    m1 = good.shape[-1]
    idx = np.arange(m1)
    last_bad = np.maximum.accumulate(np.where(good, -1, idx), axis=-1)
    start = last_bad + 1  # first interval of the run ending at each interval
    width = np.where(good, x[idx + 1] - x[np.minimum(start, m1 - 1)], -np.inf)
    end = np.argmax(width, axis=-1)  # first maximum: the shortest contexts on ties
    any_good = good.any(-1)
    lo = np.take_along_axis(start, end[..., None], -1)[..., 0]
    return np.where(any_good, lo, -1), np.where(any_good, end + 1, -1)


def classify(
    local,
    s_n,
    s_t,
    s_p,
    capped,
    saturated,
    compute,
    tolerance: float = TOLERANCE,
):
    """local_cause codes of every interval (see the module docstring). All arrays (..., m - 1)."""
    dev = local + 1.0
    d_p = -s_p
    d_tps = dev - d_p
    cause = np.full(local.shape, WEIGHTS, dtype=np.int8)
    cause = np.where(compute, COMPUTE, cause)
    cause = np.where(saturated & (np.abs(s_n + 1.0) > np.abs(s_t)), ROUNDING, cause)
    cause = np.where(capped, CAP, cause)
    cause = np.where(np.abs(d_p) >= np.abs(d_tps), POWER, cause)
    cause = np.where(np.abs(dev) < tolerance, LAW, cause)
    cause = np.where(np.isfinite(local), cause, INFEASIBLE)
    return cause.astype(np.int8)


def slice_cause(local_cause: np.ndarray, holds: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per-slice cause: LAW where the law holds, else the most frequent physical local cause
    of its failing intervals (ties: the lowest code), INFEASIBLE where there is none (the law
    holds wherever the slice is feasible, but over too short a range) or < 2 feasible points.
    """
    codes = np.arange(1, INFEASIBLE)
    counts = (local_cause[..., None] == codes).sum(-2)
    dominant = np.where(counts.any(-1), codes[np.argmax(counts, axis=-1)], INFEASIBLE)
    cause = np.where(holds, LAW, dominant)
    return np.where(points < 2, INFEASIBLE, cause).astype(np.int8)


# ---------------------------------------------------------------- the API


def law(
    ds_or_spec,
    over: str = "context",
    var: str = "tok_per_watt",
    tolerance: float = TOLERANCE,
    min_ratio: float = MIN_RATIO,
) -> xr.Dataset:
    """Slopes, fit quality, law ranges and causes of every slice of a sweep over ``over``.

    ``ds_or_spec``: an xarray Dataset of ``sweep run``, a ``.nc`` path, or a spec (path, TOML
    text, dict or GridSpec; it is run first). See the module docstring for the variables.
    """
    ds = input_dataset(ds_or_spec)
    if var not in ds.data_vars:
        raise SpecError("var", f"{var!r} is not in the dataset; allowed: {', '.join(ds.data_vars)}")
    da = ds[var]
    if over not in da.dims:
        raise SpecError(
            "over", f"{over!r} is not a dimension of {var}; allowed: {', '.join(da.dims)}"
        )
    if ds[over].dtype.kind not in "iuf":
        raise SpecError("over", f"{over!r} is not numeric; the law needs positive numbers")
    coord = np.asarray(ds[over].values, dtype=np.float64)
    if coord.size < 2:
        raise SpecError("over", f"{over!r} has {coord.size} value; the law needs at least 2")
    if not (np.all(np.isfinite(coord)) and np.all(coord > 0)):
        raise SpecError("over", f"{over!r} needs positive values (log2); it has {coord.tolist()}")
    order = np.argsort(coord)
    coord = coord[order]
    other = [d for d in da.dims if d != over]

    def values(name, dtype=np.float64):
        arr = ds[name].broadcast_like(da).transpose(*other, over).values
        return np.asarray(arr, dtype=dtype)[..., order]

    y = values(var)
    ok = np.isfinite(y) & (y > 0)
    if "feasible" in ds:
        ok &= values("feasible", bool)
    x = np.log2(coord)
    dx = np.diff(x)
    ly = _log2(y, ok)
    slope, r2, points = fit(x, ly)
    local = _local(ly, dx)
    good = np.abs(local + 1.0) < tolerance
    lo, hi = law_range(x, good)
    law_from = np.where(lo >= 0, coord[np.maximum(lo, 0)], np.nan)
    law_to = np.where(hi >= 0, coord[np.maximum(hi, 0)], np.nan)
    law_ratio = law_to / law_from
    needed = min(min_ratio, coord[-1] / coord[0]) * (1 - 1e-9)
    holds = np.nan_to_num(law_ratio, nan=0.0) >= needed

    interval = f"{over}_interval"
    sdims = tuple(other)
    idims = tuple(interval if d == over else d for d in da.dims)

    def local_var(arr, attrs):
        moved = xr.Variable((*other, interval), arr, attrs)
        return moved.transpose(*idims)

    out = {
        "slope": xr.Variable(sdims, slope, _attrs(var, over, "slope")),
        "r2": xr.Variable(sdims, r2, _attrs(var, over, "r2")),
        "points": xr.Variable(sdims, points.astype(np.int32), _attrs(var, over, "points")),
        "local_slope": local_var(local, _attrs(var, over, "local_slope")),
        "law_from": xr.Variable(sdims, law_from, _attrs(var, over, "law_from", tolerance)),
        "law_to": xr.Variable(sdims, law_to, _attrs(var, over, "law_to", tolerance)),
        "law_ratio": xr.Variable(sdims, law_ratio, _attrs(var, over, "law_ratio", tolerance)),
    }
    if all(k in ds for k in ("concurrency", "iter_time", "power")):
        okf = np.isfinite(local)
        s_n = _local(_log2(values("concurrency"), ok), dx)
        s_t = _local(_log2(values("iter_time"), ok), dx)
        s_p = _local(_log2(values("power"), ok), dx) if var == "tok_per_watt" else 0.0 * local
        n = values("concurrency")
        max_seqs = _max_seqs(ds)
        at_cap = (n == max_seqs) if max_seqs > 0 else np.zeros(n.shape, bool)
        if "batch" in ds.coords or "batch" in ds:
            saturated = values("batch") == 0
        else:
            saturated = np.ones(n.shape, bool)
        if "bound" in ds:
            is_compute = values("bound", np.int16) == 1
        else:
            is_compute = np.zeros(n.shape, bool)

        def either(a):
            return a[..., 1:] | a[..., :-1]

        lc = classify(
            np.where(okf, local, np.nan),
            s_n,
            s_t,
            s_p,
            either(at_cap),
            saturated[..., 1:] & saturated[..., :-1],
            either(is_compute),
            tolerance,
        )
        cause = slice_cause(lc, holds, points)
        out["cause"] = xr.Variable(sdims, cause, _cause_attrs("slice", min_ratio))
        out["local_cause"] = local_var(lc, _cause_attrs("interval", min_ratio))

    coords = ds.drop_vars(list(ds.data_vars)).drop_dims(over).coords
    lower = ds[over].values[order][:-1]
    upper = ds[over].values[order][1:]
    units = ds[over].attrs.get("units", "1")
    interval_coords = {
        interval: xr.Variable(
            interval,
            np.sqrt(coord[:-1] * coord[1:]),
            {"long_name": f"geometric midpoint of neighbouring {over} values", "units": units},
        ),
        f"{over}_lower": xr.Variable(
            interval, lower, {"long_name": f"lower {over}", "units": units}
        ),
        f"{over}_upper": xr.Variable(
            interval, upper, {"long_name": f"upper {over}", "units": units}
        ),
    }
    result = xr.Dataset(out, coords={**dict(coords), **interval_coords})
    result.attrs.update(ds.attrs)
    result.attrs.update(
        title=f"1/W law: {ds.attrs.get('spec_name', '')} {var} against {over}".strip(),
        law_over=over,
        law_var=var,
        law_tolerance=float(tolerance),
        law_min_ratio=float(min_ratio),
    )
    history = result.attrs.get("history", "")
    result.attrs["history"] = (
        f"{history}\nsweep law: slope of log2({var}) against log2({over})".strip()
    )
    return result


def _attrs(var, over, name, tolerance=TOLERANCE):
    text = {
        "slope": (
            "1",
            f"least-squares slope of log2({var}) against log2({over}) over feasible points "
            "(the 1/W law: -1)",
        ),
        "r2": ("1", "coefficient of determination of the log-log fit"),
        "points": ("1", "feasible points in the fit"),
        "local_slope": ("1", f"slope of log2({var}) against log2({over}) between neighbours"),
        "law_from": (
            "1",
            f"lower end of the widest contiguous {over} range with |local_slope + 1| < "
            f"{tolerance:g}",
        ),
        "law_to": (
            "1",
            f"upper end of the widest contiguous {over} range with |local_slope + 1| < "
            f"{tolerance:g}",
        ),
        "law_ratio": ("1", "law_to / law_from: the range over which the law holds"),
    }
    units, long_name = text[name]
    return {"units": units, "long_name": long_name}


def _cause_attrs(where: str, min_ratio: float) -> dict:
    if where == "slice":
        long_name = (
            f"why the 1/W law does not hold over >= {min_ratio:g}x of context on the slice "
            "(the most frequent local_cause of its failing intervals)"
        )
    else:
        long_name = "why the 1/W law bends on the interval between neighbouring contexts"
    return {
        "long_name": long_name,
        "flag_values": np.arange(len(CAUSES), dtype=np.int8),
        "flag_meanings": " ".join(CAUSES),
        "comment": CAUSE_COMMENT,
    }


# ---------------------------------------------------------------- summary and CLI


def summarise(result: xr.Dataset) -> str:
    over, var = result.attrs["law_over"], result.attrs["law_var"]
    slope = result["slope"].values
    points = result["points"].values
    n_slices = slope.size
    analysed = points >= 2
    n_analysed = int(analysed.sum())
    lines = [
        f"law of log2({var}) against log2({over}): {n_slices:,} slices "
        f"(dims {dict(result['slope'].sizes)}), {n_analysed:,} with >= 2 feasible points",
    ]
    if n_analysed:
        ratio = np.nan_to_num(result["law_ratio"].values, nan=0.0)
        share = float((ratio[analysed] >= 16 * (1 - 1e-9)).mean())
        lines.append(
            f"law holds (|local slope + 1| < {result.attrs['law_tolerance']:g}) over >= 16x of "
            f"{over}: {share:.1%} of analysed slices"
        )
        s = slope[analysed & np.isfinite(slope)]
        if s.size:
            qs = (0, 0.05, 0.25, 0.5, 0.75, 0.95, 1)
            cells = "  ".join(
                f"{'min' if q == 0 else 'max' if q == 1 else f'{q:.0%}'} {v:.3f}"
                for q, v in zip(qs, np.quantile(s, qs), strict=True)
            )
            lines.append(f"slope quantiles: {cells}")
            r2 = result["r2"].values[analysed]
            if np.isfinite(r2).any():
                lines.append(f"median r2: {np.nanmedian(r2):.4f}")
    if "cause" in result:
        counts = np.bincount(result["cause"].values.ravel().astype(np.int64), minlength=len(CAUSES))
        lines.append(
            "cause per slice: "
            + "  ".join(f"{c} {k:,}" for c, k in zip(CAUSES, counts, strict=True))
        )
    return "\n".join(lines)


def default_law_output(source: str, name: str) -> Path:
    """<input>.law.nc beside a .nc input; outputs/<spec name>.law.nc for a spec."""
    if source.endswith(".nc"):
        path = Path(source)
        return path.with_name(f"{path.name[:-3]}.law.nc")
    return Path("outputs") / f"{name}.law.nc"


def cmd_law(args) -> int:
    import time

    from sweep.dataset import write_netcdf

    t0 = time.perf_counter()
    if not args.input.endswith(".nc"):
        from sweep.spec import load_spec

        spec = load_spec(args.input, precision=args.precision)
        ds = input_dataset(spec)
    else:
        ds = input_dataset(args.input)
    result = law(ds, over=args.over, var=args.var)
    out = (
        Path(args.output)
        if args.output
        else default_law_output(args.input, ds.attrs.get("spec_name", "sweep"))
    )
    write_netcdf(result, out)
    print(summarise(result))
    print(f"seconds: {time.perf_counter() - t0:.2f}")
    print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "law", help="slopes of log2(tok/W) against log2(context) per slice, and why the law bends"
    )
    p.add_argument("input", help="dataset written by `sweep run` (.nc) or a grid spec (.toml)")
    p.add_argument("--over", default="context", help="dimension to fit against (default context)")
    p.add_argument("--var", default="tok_per_watt", help="variable to fit (default tok_per_watt)")
    p.add_argument(
        "-o",
        "--output",
        help="output path (default <input>.law.nc; outputs/<name>.law.nc for a spec)",
    )
    p.add_argument("--precision", choices=("float32", "float64"), help="for a spec: override its")
    p.set_defaults(fn=cmd_law)
