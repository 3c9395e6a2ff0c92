"""Reductions computed on the fly, chunk by chunk, without writing (or holding) the grid.

Each reducer is a small class: ``update(start, stop, outputs)`` folds in the outputs of the
flat range [start, stop) (host arrays, as ``engine.iter_chunks`` yields them; any chunking,
any order), and ``result()`` returns a small ``xarray.Dataset`` over the dimensions that are
not reduced. Memory is the reducer's state (a few arrays over the kept dimensions) plus one
chunk, so a billion-point question fits when its answer does.

- ``LawReducer`` (``sweep run --reduce law``): on every slice along ``context`` (all other
  coordinates fixed), the least-squares slope of log2(tok/W) against log2(context) over the
  slice's feasible points, its r2 and the number of points (MODEL.md section 3; the law
  predicts -1). Per slice it keeps n, sum x, sum y, sum xy, sum x^2, sum y^2 (float64, x
  centred on the mean log2 of the context coordinate to avoid cancellation).
- ``ExtremaReducer`` (``--reduce extrema --over DIMS``): the min and max of tok/W over the
  feasible points of the chosen dims, per slice of the remaining ones, and the coordinates
  where they occur. Per FIELD-NOTES, argmax is not used: a max, then the smallest flat index
  among the points equal to it (a masked min), so ties go to the first point in C order.

Chunks are split into hyperslabs (``stream.flat_slabs``) and reduced with numpy along the
reduced axes, so there is no per-point Python and no scatter.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr

from sweep.errors import SpecError
from sweep.stream import flat_slabs, slab_shape

NONE = np.iinfo(np.int64).max  # "no feasible point yet" as a flat index
KINDS = ("law", "extrema")


def _kept_coords(spec, reduced) -> dict:
    from sweep.dataset import axis_coords

    return {
        k: v for k, v in axis_coords(spec).items() if k not in reduced and not set(v.dims) & reduced
    }


def _attrs(spec, kind: str, over) -> dict:
    from sweep.dataset import provenance

    attrs = provenance(spec)
    attrs.update(
        title=f"1/W sweep: {spec.name}, {kind} over {', '.join(over)}",
        reduction=kind,
        reduced_dims=" ".join(over),
        comment="computed chunk by chunk while sweeping; the grid itself was not written",
    )
    return attrs


class LawReducer:
    """Per-slice least-squares slope of log2(tok/W) against log2(context), with r2 and n."""

    kind = "law"
    needs = ("tok_per_watt", "feasible")

    def __init__(self, spec, axis: str = "context", variable: str = "tok_per_watt"):
        if axis not in spec.axes:
            raise SpecError(f"axes.{axis}", "the law reduction needs this axis swept")
        self.spec, self.axis, self.variable = spec, axis, variable
        self.shape, self.dims = tuple(spec.shape), tuple(spec.axes)
        self.c = self.dims.index(axis)
        self.kept = tuple(d for i, d in enumerate(self.dims) if i != self.c)
        x = np.log2(np.asarray(spec.axes[axis], dtype=np.float64))
        self.x = x - x.mean()
        kept_shape = tuple(n for i, n in enumerate(self.shape) if i != self.c)
        self.sums = np.zeros((6,) + kept_shape)  # n, sx, sy, sxy, sxx, syy

    def update(self, start, stop, outputs) -> None:
        values, feasible = outputs[self.variable], outputs["feasible"]
        c = self.c
        for lo, hi, sl in flat_slabs(start, stop, self.shape):
            shape = slab_shape(sl)
            v = np.asarray(values[lo - start : hi - start], dtype=np.float64).reshape(shape)
            ok = np.asarray(feasible[lo - start : hi - start], dtype=bool).reshape(shape)
            ok = ok & (v > 0)  # NaN compares false
            y = np.where(ok, np.log2(np.where(ok, v, 1.0)), 0.0)
            xs = self.x[sl[c]].reshape([-1 if i == c else 1 for i in range(len(shape))])
            x = np.where(ok, xs, 0.0)
            part = np.stack(
                [
                    ok.sum(axis=c, dtype=np.float64),
                    x.sum(axis=c),
                    y.sum(axis=c),
                    (x * y).sum(axis=c),
                    (x * x).sum(axis=c),
                    (y * y).sum(axis=c),
                ]
            )
            kept = tuple(s for i, s in enumerate(sl) if i != c)
            self.sums[(slice(None),) + kept] += part

    def result(self) -> xr.Dataset:
        n, sx, sy, sxy, sxx, syy = self.sums
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.maximum(n, 1.0)
            vxx = sxx - sx * sx / m
            vxy = sxy - sx * sy / m
            vyy = np.maximum(syy - sy * sy / m, 0.0)
            fit = (n >= 2) & (vxx > 1e-12 * np.maximum(sxx, 1e-300))
            slope = np.where(fit, vxy / vxx, np.nan)
            exact = vyy <= 1e-24 * np.maximum(syy, 1e-300)
            r2 = np.where(fit, np.where(exact, 1.0, vxy * vxy / (vxx * vyy)), np.nan)
        r2 = np.where(np.isnan(r2), r2, np.clip(r2, 0.0, 1.0))
        what = f"log2({self.variable}) against log2({self.axis})"
        data = {
            "slope": xr.Variable(
                self.kept,
                slope,
                {
                    "long_name": f"least-squares slope of {what} over the feasible points "
                    "(the 1/W law predicts -1)",
                    "units": "1",
                },
            ),
            "r2": xr.Variable(
                self.kept,
                r2,
                {"long_name": "coefficient of determination of that fit", "units": "1"},
            ),
            "n_feasible": xr.Variable(
                self.kept,
                n.astype(np.int64),
                {"long_name": f"feasible points along {self.axis} in the slice", "units": "1"},
            ),
        }
        coords = _kept_coords(self.spec, {self.axis})
        return xr.Dataset(data, coords=coords, attrs=_attrs(self.spec, self.kind, [self.axis]))


def parse_over(spec, over) -> tuple[str, ...]:
    """Dims to reduce: names separated by commas or spaces (default: every dimension)."""
    if over is None or over == "" or over == []:
        return tuple(spec.axes)
    if isinstance(over, str):
        over = [over]
    names = [n for item in over for n in item.replace(",", " ").split()]
    for name in names:
        if name not in spec.axes:
            raise SpecError("over", f"{name!r} is not a dimension; allowed: {', '.join(spec.axes)}")
    if len(set(names)) != len(names):
        raise SpecError("over", "a dimension is named twice")
    return tuple(d for d in spec.axes if d in names)  # spec order


class ExtremaReducer:
    """Min and max of tok/W over ``over`` per slice of the other dims, and where they occur."""

    kind = "extrema"
    needs = ("tok_per_watt", "feasible")

    def __init__(self, spec, over=None, variable: str = "tok_per_watt"):
        self.spec, self.variable = spec, variable
        self.over = parse_over(spec, over)
        self.shape, self.dims = tuple(spec.shape), tuple(spec.axes)
        self.r = tuple(i for i, d in enumerate(self.dims) if d in self.over)
        self.k = tuple(i for i in range(len(self.dims)) if i not in self.r)
        kept_shape = tuple(self.shape[i] for i in self.k)
        self.vmax = np.full(kept_shape, -np.inf)
        self.vmin = np.full(kept_shape, np.inf)
        self.imax = np.full(kept_shape, NONE, dtype=np.int64)
        self.imin = np.full(kept_shape, NONE, dtype=np.int64)
        self.n = np.zeros(kept_shape, dtype=np.int64)

    def update(self, start, stop, outputs) -> None:
        values, feasible = outputs[self.variable], outputs["feasible"]
        r = self.r
        for lo, hi, sl in flat_slabs(start, stop, self.shape):
            shape = slab_shape(sl)
            v = np.asarray(values[lo - start : hi - start], dtype=np.float64).reshape(shape)
            ok = np.asarray(feasible[lo - start : hi - start], dtype=bool).reshape(shape)
            ok = ok & np.isfinite(v)
            index = np.arange(lo, hi, dtype=np.int64).reshape(shape)
            kept = tuple(sl[i] for i in self.k)
            self.n[kept] += ok.sum(axis=r)
            for sign, best, where in ((1.0, self.vmax, self.imax), (-1.0, self.vmin, self.imin)):
                s = np.where(ok, sign * v, -np.inf)
                top = s.max(axis=r, keepdims=True)
                at = np.where(ok & (s == top), index, NONE).min(axis=r)
                top = sign * top.reshape(at.shape)
                cur, cur_at = best[kept], where[kept]
                better = (sign * top > sign * cur) | ((top == cur) & (at < cur_at))
                best[kept] = np.where(better, top, cur)
                where[kept] = np.where(better, at, cur_at)

    def result(self) -> xr.Dataset:
        from sweep.dataset import COORDS, VARIABLES
        from sweep.modes import coord_values

        kept = tuple(self.dims[i] for i in self.k)
        units, long_name = VARIABLES.get(self.variable, ("", self.variable))
        over = ", ".join(self.over)
        data = {}
        for tag, best, at in (("max", self.vmax, self.imax), ("min", self.vmin, self.imin)):
            found = at != NONE
            data[f"{self.variable}_{tag}"] = xr.Variable(
                kept,
                np.where(found, best, np.nan),
                {"long_name": f"{tag}imum over {over} of {long_name}", "units": units},
            )
            index = np.unravel_index(np.where(found, at, 0), self.shape)
            for d in self.over:
                i = self.dims.index(d)
                values = coord_values(d, list(self.spec.axes[d]))
                picked = values[index[i]]
                if values.dtype.kind == "U":
                    picked, note = np.where(found, picked, ""), "empty"
                elif values.dtype.kind == "f":
                    picked, note = np.where(found, picked, np.nan), "NaN"
                else:
                    picked, note = np.where(found, picked, -1), "-1"
                attrs = {
                    "long_name": f"{d} where {self.variable}_{tag} occurs "
                    f"(first in C order on ties; {note} where no point is feasible)"
                }
                if COORDS.get(d, ("",))[0]:
                    attrs["units"] = COORDS[d][0]
                data[f"{d}_at_{tag}"] = xr.Variable(kept, np.asarray(picked), attrs)
        data["n_feasible"] = xr.Variable(
            kept, self.n, {"long_name": f"feasible points over {over} in the slice", "units": "1"}
        )
        coords = _kept_coords(self.spec, set(self.over))
        return xr.Dataset(data, coords=coords, attrs=_attrs(self.spec, self.kind, self.over))


def make_reducer(kind: str, spec, over=None):
    if kind == "law":
        if over:
            raise SpecError("over", "--over applies to --reduce extrema (law reduces context)")
        return LawReducer(spec)
    if kind == "extrema":
        return ExtremaReducer(spec, over)
    raise SpecError("reduce", f"{kind!r}; allowed: {', '.join(KINDS)}")


def reduce_sweep(
    spec,
    reducers,
    *,
    precision: str | None = None,
    chunk_size: int | None = None,
    memory: int | None = None,
    progress: bool | None = None,
    devices=None,
):
    """Sweep a spec once, feeding every reducer (objects, or kinds with ``make_reducer``).

    Only the outputs the reducers need are computed. Returns (reducers, summary, seconds).
    """
    from sweep.engine import iter_chunks
    from sweep.modes import build_problem
    from sweep.spec import load_spec
    from sweep.stream import Summary, choose_blocks, chunk_for_budget, default_memory

    spec = load_spec(spec, precision=precision)
    reducers = [make_reducer(r, spec) if isinstance(r, str) else r for r in reducers]
    needs = sorted({n for r in reducers for n in r.needs} | {"tok_per_watt", "feasible"})
    problem = build_problem(spec, outputs=needs)
    memory = memory or default_memory()
    # the reducers' float64 temporaries: about 8 arrays of 8 bytes per point of a chunk
    chunk = chunk_size or chunk_for_budget(problem, memory, 2.0, devices, extra=64.0)
    blocks = choose_blocks(problem.shape, chunk)
    summary = Summary()
    t0 = time.perf_counter()
    for start, stop, out in iter_chunks(
        problem, blocks.chunk, progress, ranges=blocks, devices=devices
    ):
        for r in reducers:
            r.update(start, stop, out)
        summary.update(start, stop, out)
    return reducers, summary, time.perf_counter() - t0


def reduced_path(out, kind: str) -> Path:
    """outputs/NAME.nc -> outputs/NAME.law.nc (the suffix replaces a final .nc)."""
    out = Path(out)
    stem = out.name[:-3] if out.name.endswith(".nc") else out.name
    return out.with_name(f"{stem}.{kind}.nc")


def reduce_to_files(spec, kinds, out, over=None, **kwargs) -> list[str]:
    """Run the reductions, write each as ``<out stem>.<kind>.nc``; the lines to print."""
    from sweep.dataset import write_netcdf
    from sweep.spec import load_spec

    spec = load_spec(spec, precision=kwargs.pop("precision", None))
    kinds = list(dict.fromkeys(kinds))
    if over and "extrema" not in kinds:
        raise SpecError("over", "--over applies to --reduce extrema")
    reducers = [make_reducer(k, spec, over if k == "extrema" else None) for k in kinds]
    reducers, summary, seconds = reduce_sweep(spec, reducers, **kwargs)
    lines = summary.lines(spec, seconds)
    for r in reducers:
        ds = r.result()
        ds.attrs.update(points=summary.points, compute_seconds=round(seconds, 4))
        path = write_netcdf(ds, reduced_path(out, r.kind))
        lines += describe(ds, r.kind) + [f"wrote {path}"]
    return lines


def describe(ds: xr.Dataset, kind: str) -> list[str]:
    if kind == "law":
        slope = ds["slope"].values
        ok = np.isfinite(slope)
        if not ok.any():
            return ["law: no slice has two feasible contexts"]
        near = np.abs(slope[ok] + 1) < 0.1
        return [
            f"law: {ok.sum():,} slices fitted; slope median {np.median(slope[ok]):.3f}, "
            f"range {slope[ok].min():.3f} .. {slope[ok].max():.3f}; "
            f"|slope + 1| < 0.1 on {near.mean():.1%}"
        ]
    name = next(k for k in ds.data_vars if k.endswith("_max"))
    hi = ds[name].values
    lo = ds[name[:-4] + "_min"].values
    if not np.isfinite(hi).any():
        return ["extrema: no feasible point"]
    return [
        f"extrema over {ds.attrs.get('reduced_dims', '')}: {hi.size:,} slices; "
        f"max {np.nanmax(hi):.4g}, min {np.nanmin(lo):.4g}"
    ]
