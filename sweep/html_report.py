"""``sweep report``: one self-contained, offline HTML page of the 1/W law and the paper's claims.

``report(specs=None, out="outputs/report")`` runs every grid spec (``sweep.run``), fits the law
(``sweep.law``), differentiates it (``sweep.grad``), sizes fleets (``sweep.fleet``) and writes
into ``out``:

- ``index.html``: every figure embedded as a base64 PNG, inline CSS, no scripts, no external
  resources (the only ``http`` links are citations to arxiv.org, which the page does not load);
- per figure, the data behind it (``<figure>.csv``; the fleet figures' ``.nc``), linked from the
  page, and the figure itself as ``<figure>.png``;
- ``claims.csv``: the claims table at full precision;
- ``<spec>.nc``: every grid spec's dataset.

Sections: (a) tok/W against context, log-log, one line per GPU with the 1/W guide; (b)
concurrency against context; (c) the law's slope per slice as a heat map (GPU x the other
swept axes); (d) median |elasticity| per lever and GPU; (e) each GPU's tok/W over H100's at
each context; (f) the paper's claims (arXiv 2603.17280, abstract) against ours in calibrated and
roofline mode, with a sentence per claim on what explains the difference, built from the
computed numbers; (g) fleets: the two-pool gain against the routing threshold b_short.

No SPEC arguments: ``grids/paper.toml``, ``grids/report-*.toml`` and ``grids/fleet.toml`` (in
that order). A fleet spec (``mode = "fleet"``, or a ``[workload]`` / ``[workloads]`` table) goes
to section (g) and the fleet rows of the claims table, every other spec to (a)-(f). The claims
table looks its points up in the grid specs given, first match wins (the spec it came from is
named in each cell): a point that none of them holds reads "not in the specs of this report".
Every value of ours in the page comes from a dataset computed in this run.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from kernels.calibrated import block_limit, slot_limit
from sweep.spec import PARAMS, GridSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "grids"  # the shipped specs (a source checkout or an editable install)
PAPER = "arXiv 2603.17280"
PAPER_URL = "https://arxiv.org/abs/2603.17280"
SOURCE = f"{PAPER}, abstract"

H100 = {"calibrated": "h100", "roofline": "h100-sxm"}
B200 = "b200"
DENSE = "llama-3.1-70b"
MOE = "qwen3-235b-a22b"
REFERENCE = {"model": DENSE, "tp": 8, "dtype": "bf16", "batch": 0}  # roofline deployment
GEN_CONTEXT = 8192  # where the B200 / H100 ratio is read (the H100 profile's calib_ctx)
MAX_LINES = 24  # lines per figure before other axes are pinned to their first value
MAX_HEAT_ROWS = 40

NOT_IN_SPECS = "not in the specs of this report"


# ---------------------------------------------------------------- inputs


def default_specs() -> list[Path]:
    """The shipped specs: paper.toml, report-*.toml (sorted), fleet.toml; from the source tree's
    grids/ folder, else from ./grids (an installed package does not carry grids/)."""
    grids = GRIDS if (GRIDS / "paper.toml").is_file() else Path("grids")
    specs = [grids / "paper.toml", *sorted(grids.glob("report-*.toml"), key=lambda p: p.stem)]
    fleet = grids / "fleet.toml"
    if fleet.is_file():
        specs.append(fleet)
    return specs


def is_fleet_spec(spec) -> bool:
    """A fleet spec (sweep.fleet): mode = "fleet", or a [workload] / [workloads] table."""
    from sweep.errors import SpecError
    from sweep.fleet_sizing import is_fleet_spec as fleet_is_fleet_spec
    from sweep.spec import read_spec_source

    if isinstance(spec, GridSpec):
        return False
    if fleet_is_fleet_spec(spec):
        return True
    try:
        table, _, _ = read_spec_source(spec)
    except SpecError:
        return False
    return "workload" in table or "workloads" in table


def _spec_label(spec) -> str:
    if isinstance(spec, str | Path) and not (isinstance(spec, str) and "\n" in spec):
        path = Path(spec)
        try:
            return str(path.resolve().relative_to(ROOT))
        except ValueError:
            return str(path)
    return "(inline spec)"


@dataclass
class Run:
    """One grid spec: its dataset, law and elasticities."""

    key: str  # unique file stem
    label: str  # where the spec came from
    spec: GridSpec
    ds: xr.Dataset
    law: xr.Dataset | None  # None with a single context (no slope to fit)
    grad: xr.Dataset

    @property
    def mode(self) -> str:
        return self.spec.mode


@dataclass
class FleetRun:
    key: str
    label: str
    ds: xr.Dataset


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    png: Path
    data: list[Path] = field(default_factory=list)


def _unique(name: str, used: set) -> str:
    key = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "spec"
    base, i = key, 2
    while key in used:
        key, i = f"{base}-{i}", i + 1
    used.add(key)
    return key


def compute(specs=None) -> tuple[list[Run], list[FleetRun]]:
    """Run every spec: grid specs through run/law/grad, fleet specs through fleet."""
    from sweep.api import run
    from sweep.elasticity import grad
    from sweep.law_fit import law

    specs = list(specs) if specs else default_specs()
    used: set = set()
    runs, fleets = [], []
    for raw in specs:
        label = _spec_label(raw)
        if is_fleet_spec(raw):
            from sweep.fleet_sizing import fleet

            ds = fleet(raw, progress=False)
            fleets.append(FleetRun(_unique(ds.attrs.get("spec_name", "fleet"), used), label, ds))
            continue
        spec = load_spec(raw)
        ds = run(spec, progress=False)
        fitted = law(ds) if ds.sizes["context"] >= 2 else None
        runs.append(Run(_unique(spec.name, used), label, spec, ds, fitted, grad(spec)))
    return runs, fleets


# ---------------------------------------------------------------- small helpers


def _fmt(v, digits: int = 4) -> str:
    """A number as the page shows it (4 significant digits; integers as integers)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    v = float(v)
    if v == int(v) and abs(v) < 1e7:
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def _ctx(w) -> str:
    w = int(w)
    return f"{w // 1024}K" if w % 1024 == 0 else f"{w:,}"


def _varying(da: xr.DataArray, over: str | None = "context") -> list[str]:
    return [d for d in da.dims if d != over and da.sizes[d] > 1]


def _pin(da: xr.DataArray, lines_per: int, over: str = "context"):
    """Pin varying axes (last first, gpu last of all) to one value (the reference deployment's,
    Llama-3.1-70B bf16 TP8, where swept; else the first) until the figure has at most
    MAX_LINES lines; returns (pinned array, {axis: value} pinned)."""
    pinned = {}
    dims = _varying(da, over)
    order = [d for d in reversed(dims) if d != "gpu"] + (["gpu"] if "gpu" in dims else [])
    for d in order:
        if math.prod(da.sizes[k] for k in _varying(da, over)) * lines_per <= MAX_LINES:
            break
        values = list(da[d].values)
        value = REFERENCE[d] if REFERENCE.get(d) in values else values[0]
        pinned[d] = value
        da = da.sel({d: value})
    return da, pinned


def _lines(da: xr.DataArray, over: str = "context"):
    """(label, x, y) per slice of da over ``over``: labels name the varying axes only."""
    dims = _varying(da, over)
    drop = [d for d in da.dims if d != over and d not in dims]
    da = da.squeeze(drop, drop=True) if drop else da
    x = da[over].values
    if not dims:
        return [(da.name or "", x, da.values)]
    stacked = da.stack(series=dims).transpose("series", over)
    out = []
    for idx, row in zip(stacked["series"].values, stacked.values, strict=True):
        label = " / ".join(str(v) for v in np.atleast_1d(idx))
        out.append((label, x, row))
    return out


def _pinned_text(pinned: dict) -> str:
    if not pinned:
        return ""
    cells = ", ".join(f"{k} = {v}" for k, v in pinned.items())
    return f" Shown at {cells} (to keep the figure readable); every slice is in the data file."


def _settings(run: Run) -> str:
    """The axes held at one value in a run, as text."""
    ds = run.ds
    parts = []
    for name in ("model", "tp", "dtype", "batch", "sparsity"):
        if name in ds.coords and ds[name].size == 1:
            v = ds[name].values.item() if ds[name].ndim == 0 else ds[name].values[0]
            if name == "batch":
                v = "saturated" if v == 0 else v
            parts.append(f"{name} {v}")
    changed = {k: v for k, v in run.spec.params.items() if k in PARAMS and v != PARAMS[k][0]}
    parts += [f"{k} = {v}" for k, v in changed.items()]
    return ", ".join(parts)


def _write_csv(frame_or_ds, path: Path) -> Path:
    if isinstance(frame_or_ds, xr.Dataset | xr.DataArray):
        obj = frame_or_ds.reset_coords(drop=True)
        frame = obj.to_dataframe() if isinstance(obj, xr.Dataset) else obj.to_dataframe()
    else:
        frame = frame_or_ds
    frame.to_csv(path)
    return path


# ---------------------------------------------------------------- sections (a), (b), (e)


def _context_figure(run: Run, out: Path, var: str, letter: str, ylabel: str, title: str):
    ds = run.ds
    if ds.sizes.get("context", 0) < 2:
        return None
    da, pinned = _pin(ds[var], 1)
    lines = _lines(da)
    from sweep.plots import plot_lines

    key = f"{letter}-{run.key}"
    png = plot_lines(
        lines,
        out / f"{key}.png",
        title=f"{run.spec.name} ({run.mode}): {title}",
        ylabel=ylabel,
        guide="1/W",
    )
    keep = [var, "feasible"] + (["concurrency_limit"] if var == "concurrency" else [])
    data = _write_csv(ds[keep], out / f"{key}.csv")
    settings = _settings(run)
    caption = (
        f"{run.spec.description or run.spec.name}. {run.mode.capitalize()} mode"
        f"{'; ' + settings if settings else ''}. Log-log axes; the dashed line has slope -1 "
        f"(the 1/W law). Infeasible points are left out.{_pinned_text(pinned)}"
    )
    return Figure(key, f"{run.spec.name}: {title}", caption, png, [data])


def section_a(runs, out):
    figs = [
        _context_figure(
            r, out, "tok_per_watt", "a", "tok/W (output tokens per joule)", "tok/W against context"
        )
        for r in runs
    ]
    return [f for f in figs if f]


def section_b(runs, out):
    figs = [
        _context_figure(
            r,
            out,
            "concurrency",
            "b",
            "sequences in flight per replica",
            "concurrency against context",
        )
        for r in runs
    ]
    return [f for f in figs if f]


def _h100_of(run: Run) -> str | None:
    key = H100[run.mode]
    if "gpu" in run.ds.dims and key in run.ds["gpu"].values and run.ds.sizes["gpu"] > 1:
        return key
    return None


def gains(run: Run) -> xr.DataArray:
    """tok/W of every GPU over the H100's (same context and other axes)."""
    tokw = run.ds["tok_per_watt"]
    gain = tokw / tokw.sel(gpu=_h100_of(run), drop=True)
    gain.name = "gain_over_h100"
    gain.attrs = {"units": "1", "long_name": f"tok/W over {_h100_of(run)}'s tok/W"}
    return gain


def section_e(runs, out):
    from sweep.plots import plot_lines

    figs = []
    for run in runs:
        base = _h100_of(run)
        if base is None or run.ds.sizes.get("context", 0) < 2:
            continue
        gain = gains(run)
        others = [g for g in gain["gpu"].values if g != base]
        da, pinned = _pin(gain.sel(gpu=others), 1)
        key = f"e-{run.key}"
        png = plot_lines(
            _lines(da),
            out / f"{key}.png",
            title=f"{run.spec.name} ({run.mode}): tok/W over {base}'s",
            ylabel=f"tok/W / tok/W of {base}",
            logy=False,
            guide=None,
            hline=1.0,
        )
        data = _write_csv(
            xr.Dataset({"gain_over_h100": gain, **{"tok_per_watt": run.ds["tok_per_watt"]}}),
            out / f"{key}.csv",
        )
        note = (
            " The calibrated profiles are different deployments (the A10G's serves a 7B-class "
            "model on one GPU), so their ratios are not like-for-like."
            if run.mode == "calibrated"
            else ""
        )
        caption = (
            f"Each GPU's tok/W divided by {base}'s at the same context and settings "
            f"({_settings(run) or run.mode}); above 1 the GPU delivers more tokens per joule."
            f"{note}{_pinned_text(pinned)}"
        )
        figs.append(Figure(key, f"{run.spec.name}: gain over {base}", caption, png, [data]))
    return figs


# ---------------------------------------------------------------- section (c): the law


def _cause_names(codes) -> np.ndarray:
    from sweep.law_fit import CAUSES

    codes = np.asarray(codes)
    return np.array([CAUSES[int(c)] for c in codes.ravel()], dtype=object).reshape(codes.shape)


def _heat_layout(da: xr.DataArray):
    """(2-D values, row labels, column labels, row axis names) with gpu as the columns."""
    dims = _varying(da, None)
    drop = [d for d in da.dims if d not in dims]
    da = da.squeeze(drop, drop=True) if drop else da
    cols_dim = "gpu" if "gpu" in dims else (dims[0] if dims else None)
    row_dims = [d for d in dims if d != cols_dim]
    if cols_dim is None:
        return da.values.reshape(1, 1), ["all"], [""], []
    if not row_dims:
        return da.values.reshape(1, -1), ["slope"], list(da[cols_dim].values), []
    stacked = da.stack(row=row_dims).transpose("row", cols_dim)
    rows = [" / ".join(str(v) for v in np.atleast_1d(i)) for i in stacked["row"].values]
    return stacked.values, rows, list(da[cols_dim].values), row_dims


def section_c(runs, out):
    from sweep.plots import plot_heatmap

    figs, tables = [], []
    for run in (r for r in runs if r.law is not None):
        res = run.law
        slope = res["slope"]
        values, rows, cols, row_dims = _heat_layout(slope)
        causes, _, _, _ = _heat_layout(res["cause"])
        pinned = ""
        if len(rows) > MAX_HEAT_ROWS:
            values, causes, rows = (
                values[:MAX_HEAT_ROWS],
                causes[:MAX_HEAT_ROWS],
                rows[:MAX_HEAT_ROWS],
            )
            pinned = f" The first {MAX_HEAT_ROWS} rows are shown; every slice is in the data file."
        names = _cause_names(causes)
        text = np.where(
            np.isfinite(values),
            np.vectorize(lambda v, c: f"{v:.2f}" + ("" if c == "law" else f"\n{c}"))(values, names),
            "n/a",
        )
        key = f"c-{run.key}"
        png = plot_heatmap(
            values,
            rows,
            cols,
            out / f"{key}.png",
            title=f"{run.spec.name} ({run.mode}): slope of log2 tok/W against log2 W",
            xlabel="gpu",
            ylabel=" / ".join(row_dims),
            cbar_label="slope (the law: -1)",
            center=-1.0,
            text=text,
        )
        per_slice = res[["slope", "r2", "points", "law_from", "law_to", "law_ratio"]]
        frame = per_slice.reset_coords(drop=True).to_dataframe()
        frame["cause"] = _cause_names(
            res["cause"].transpose(*per_slice["slope"].dims).values
        ).ravel()
        data = _write_csv(frame, out / f"{key}.csv")
        local = _write_csv(res[["local_slope", "local_cause"]], out / f"{key}-local.csv")
        caption = (
            f"Least-squares slope of log2(tok/W) against log2(W) per slice over "
            f"W = {_ctx(run.ds['context'].min())}..{_ctx(run.ds['context'].max())} "
            f"({_settings(run) or run.mode}; feasible windows only). Blue: steeper than -1, red: "
            "shallower. Below a slope, why the law does not hold over >= 16x of context on that "
            "slice (sweep.law's cause: compute-bound, power curve off its plateau, weights "
            "streamed, rounding of small batches, cap); n/a: no feasible fit (weights do not fit, "
            f"or windows beyond the model's max_position).{pinned}"
        )
        figs.append(Figure(key, f"{run.spec.name}: the law's slope", caption, png, [data, local]))
        if values.size <= 16:
            tables.append((run, frame))
    return figs, tables


def _law_table_html(run: Run, frame) -> str:
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in [*frame.index.names, "slope", "r2", "law holds over W", "cause"]
    )
    body = []
    for idx, row in frame.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        span = (
            f"{_ctx(row['law_from'])}..{_ctx(row['law_to'])}"
            if np.isfinite(row["law_from"])
            else "nowhere"
        )
        cells = [*(str(i) for i in idx), _fmt(row["slope"]), _fmt(row["r2"]), span, row["cause"]]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (
        f"<p class='small'>{html.escape(run.spec.name)} ({run.mode}): per slice</p>"
        f"<table class='data'><tr>{head}</tr>{''.join(body)}</table>"
    )


# ---------------------------------------------------------------- section (d): elasticities


def section_d(runs, out, top: int = 12):
    from sweep.elasticity import lever_medians
    from sweep.plots import plot_grouped_bars

    figs = []
    for run in runs:
        by, labels, names, absmed, med = lever_medians(run.grad, by=("gpu",))
        gpus = [lab[0] if lab else "all" for lab in labels]
        overall = np.nanmax(np.where(np.isfinite(absmed), absmed, -1.0), axis=0)
        order = [j for j in np.argsort(-overall) if overall[j] >= 0]
        shown = order[:top]
        key = f"d-{run.key}"
        png = plot_grouped_bars(
            absmed[:, shown].T,
            [names[j] for j in shown],
            gpus,
            out / f"{key}.png",
            title=f"{run.spec.name} ({run.mode}): median |d ln(tok/W) / d ln(x)| per lever",
            ylabel="median |elasticity|",
        )
        rows = [
            {
                "gpu": g,
                "lever": names[j],
                "median_abs_elasticity": absmed[i, j],
                "median_elasticity": med[i, j],
            }
            for i, g in enumerate(gpus)
            for j in range(len(names))
        ]
        import pandas as pd

        data = _write_csv(pd.DataFrame(rows).set_index(["gpu", "lever"]), out / f"{key}.csv")
        more = (
            f" The {len(shown)} largest of {len(names)} levers are drawn."
            if len(order) > top
            else ""
        )
        over = [d for d in run.spec.axes if d != "gpu"]
        caption = (
            f"Median over the grid's other axes ({', '.join(over)}) of |elasticity| = "
            "|d ln(tok/W) / d ln(x)| by automatic differentiation of the "
            "continuous relaxation (floor and ceil dropped): a 1% change in x moves tok/W by "
            f"about that many percent. Infeasible points are left out.{more} Signed medians are "
            "in the data file."
        )
        figs.append(Figure(key, f"{run.spec.name}: elasticities", caption, png, [data]))
    return figs


# ---------------------------------------------------------------- section (f): the claims


@dataclass
class Cell:
    value: float | None = None
    settings: str = ""
    spec: str = ""
    note: str = ""  # why there is no value

    def text(self) -> str:
        return _fmt(self.value) if self.value is not None else ""


@dataclass
class Claim:
    key: str
    claim: str
    paper: float
    paper_text: str
    source: str
    calibrated: Cell
    roofline: Cell
    explanation: str

    def ratio(self, cell: Cell) -> float | None:
        if cell.value is None or not math.isfinite(cell.value):
            return None
        return cell.value / self.paper


def _params_ok(run: Run, overrides: dict) -> bool:
    for k, v in run.spec.params.items():
        want = overrides.get(k, PARAMS[k][0])
        if v != want:
            return False
    return True


def _matches(ds: xr.Dataset, name: str, value) -> bool | None:
    """True/False when ds has the axis (as a dimension or a scalar coordinate); None if not."""
    if name in ds.dims:
        return bool(np.isin(value, ds[name].values))
    if name in ds.coords:
        return ds[name].values.item() == value
    return None


def find(runs, mode: str, params: dict | None = None, line: bool = False, **sel):
    """(run, selection) of the first run of ``mode`` holding every ``sel`` value at default
    parameters (but ``params``); a point, or with ``line`` a line over the context axis."""
    params = params or {}
    for run in runs:
        if run.mode != mode or not _params_ok(run, params):
            continue
        ds = run.ds
        if any(not _matches(ds, k, v) for k, v in sel.items()):
            continue
        idx = {k: v for k, v in sel.items() if k in ds.dims}
        point = ds.sel(idx)
        rest = [d for d in point.dims if d != ("context" if line else None)]
        if any(point.sizes[d] > 1 for d in rest):
            continue
        point = point.squeeze(rest) if rest else point
        if line and point.sizes.get("context", 0) < 2:
            continue
        return run, point
    return None


def _roof_sel(gpu=None, model=DENSE, **kw):
    sel = {**REFERENCE, "model": model, **kw}
    if gpu is not None:
        sel["gpu"] = gpu
    return sel


def _where_roof(run: Run, point, gpu: str | None = None) -> str:
    model = point["model"].values.item()
    dtype = point["dtype"].values.item()
    tp = int(point["tp"].values.item())
    b = point["concurrency"].values
    batch = f", saturated (B = {int(b)})" if np.ndim(b) == 0 and np.isfinite(b) else ", saturated"
    cov = run.spec.params.get("expert_coverage")
    moe = f", {cov} expert coverage" if model == MOE else ""
    where = f"{gpu or point['gpu'].values.item()}, {model}, {dtype}, TP{tp}{batch}{moe}"
    if "context" in point.coords and point["context"].ndim == 0:
        where += f", W = {int(point['context'])}"
    return where


def _where_cal(point) -> str:
    gpu = point["gpu"].values.item()
    name = point["gpu_name"].values.item()
    where = f"profile {gpu} ({name}), fill 0.5"
    if "context" in point.coords and point["context"].ndim == 0:
        where += f", W = {int(point['context'])}, n = {int(point['concurrency'])}"
    return where


def _cell(hit, value_fn, where_fn) -> Cell:
    if hit is None:
        return Cell(note=NOT_IN_SPECS)
    run, point = hit
    return Cell(float(value_fn(run, point)), where_fn(run, point), run.spec.name)


def _f(point, name) -> float:
    return float(point[name].values)


def _usable(run: Run, point) -> float:
    return _f(point, "mem_capacity") * run.spec.params["mem_util"]


def _roofline_accounting(run, point, paper) -> str:
    tp = int(point["tp"].values.item())
    tps, power = _f(point, "throughput"), _f(point, "power")
    per_replica = tps * tp / power
    return (
        f"Roofline divides the replica's {tps * tp:,.0f} tok/s over the power of all {tp} GPUs "
        f"({power:.0f} W each); calibrated mode credits n / t_iter to one GPU's power "
        f"(MODEL.md section 1). Counted that way the roofline point gives "
        f"{_fmt(per_replica)} tok/W ({per_replica / paper:.2f}x the paper)."
    )


def _h100_cells(runs, context: int, var: str):
    """The H100 points at ``context`` in both modes (saturated), and their cells for ``var``."""
    cal = find(runs, "calibrated", context=context, gpu=H100["calibrated"], batch=0)
    roof = find(runs, "roofline", context=context, **_roof_sel(H100["roofline"]))
    c = _cell(cal, lambda r, p: _f(p, var), lambda r, p: _where_cal(p))
    r = _cell(roof, lambda r, p: _f(p, var), _where_roof)
    return cal, roof, c, r


def _claim_tokw(runs, context: int, paper: float) -> Claim:
    cal, roof, c, r = _h100_cells(runs, context, "tok_per_watt")
    parts = []
    if cal:
        p = cal[1]
        ratio = c.value / paper
        same = "reproduces the paper" if abs(ratio - 1) < 0.05 else f"is {ratio:.2f}x the paper"
        parts.append(
            f"Calibrated mode {same}: it evaluates the paper's own H100 profile "
            f"(inference-fleet-sim) at fill = 0.5: n = {int(_f(p, 'concurrency'))}, "
            f"t_iter = {_f(p, 'iter_time') * 1e3:.1f} ms, P = {_f(p, 'power'):.0f} W."
        )
    if roof:
        _, q = roof
        bound = "compute" if int(q["bound"]) == 1 else "memory"
        n_vs = t_vs = ""
        if cal:
            n_vs = f" ({_f(q, 'concurrency') / _f(cal[1], 'concurrency'):.2f}x the profile's n)"
            t_vs = f" (profile: {_f(cal[1], 'iter_time') * 1e3:.1f} ms)"
        parts.append(
            f"Roofline: a TP{int(q['tp'])} replica holds B = {int(_f(q, 'concurrency'))} "
            f"sequences{n_vs} and its {bound}-bound iteration takes "
            f"{_f(q, 'iter_time') * 1e3:.1f} ms{t_vs}. " + _roofline_accounting(*roof, paper)
        )
    return Claim(
        f"tok_per_watt_{context}",
        f"H100 tok/W at {_ctx(context)} context",
        paper,
        f"{paper:g} tok/W",
        SOURCE,
        c,
        r,
        " ".join(parts),
    )


def _claim_concurrency(runs, context: int, paper: float) -> Claim:
    cal, roof, c, r = _h100_cells(runs, context, "concurrency")
    parts = []
    if cal:
        p = cal[1]
        profile = {k: _f(p, f"profile_{k}") for k in ("max_slots", "calib_ctx", "kv_blocks", "blk")}
        profile["context"] = context
        slots, blocks = int(slot_limit(profile)), int(block_limit(profile))
        parts.append(
            f"Calibrated: n = min(slot limit {slots}, KV-block limit {blocks}) from the profile's "
            f"measured max_slots and kv_blocks, so it matches the paper by construction."
        )
    if roof:
        run, q = roof
        usable = _usable(run, q)
        kv = _f(q, "kv_budget")
        parts.append(
            f"Roofline: of each GPU's {usable / 1e9:.1f} GB usable memory (mem_util "
            f"{run.spec.params['mem_util']:g}), the weights take {(usable - kv) / 1e9:.1f} GB and "
            f"the {kv / 1e9:.1f} GB left for KV cache hold B_max = {int(_f(q, 'concurrency'))} "
            f"sequences reserving the full {_ctx(context)} window each"
            + (
                f" ({_f(q, 'concurrency') / _f(cal[1], 'concurrency'):.2f}x the profile's "
                "measured limit)."
                if cal
                else "."
            )
        )
    return Claim(
        f"concurrency_{context}",
        f"H100 sequences in flight at {_ctx(context)} context",
        paper,
        f"{paper:g} sequences",
        SOURCE,
        c,
        r,
        " ".join(parts),
    )


def _law_slice(run: Run, point_sel: dict, var: str = "tok_per_watt"):
    from sweep.law_fit import law

    res = run.law if var == "tok_per_watt" else law(run.ds, var=var)
    sel = {k: v for k, v in point_sel.items() if k in res.dims}
    return res.sel(sel).squeeze()


def _line_hits(runs):
    cal = find(runs, "calibrated", line=True, gpu=H100["calibrated"], batch=0)
    roof = find(runs, "roofline", line=True, **_roof_sel(H100["roofline"]))
    return cal, roof


def _claim_slope(runs) -> Claim:
    from sweep.law_fit import CAUSES

    cal_sel = {"gpu": H100["calibrated"], "batch": 0}
    roof_sel = _roof_sel(H100["roofline"])
    cal, roof = _line_hits(runs)
    cells, parts = [], []
    for hit, sel, name in ((cal, cal_sel, "Calibrated"), (roof, roof_sel, "Roofline")):
        if hit is None:
            cells.append(Cell(note=NOT_IN_SPECS))
            continue
        run, line = hit
        res = _law_slice(run, sel)
        s_tps = float(_law_slice(run, sel, "throughput")["slope"])
        s_p = float(_law_slice(run, sel, "power")["slope"])
        w = line["context"].values
        where = (_where_cal(line) if run.mode == "calibrated" else _where_roof(run, line)) + (
            f", least squares over W = {_ctx(w.min())}..{_ctx(w.max())}"
        )
        cells.append(Cell(float(res["slope"]), where, run.spec.name))
        span = (
            f"holds (|local slope + 1| < 0.1) over W = {_ctx(res['law_from'])}.."
            f"{_ctx(res['law_to'])}"
            if np.isfinite(float(res["law_from"]))
            else "holds nowhere"
        )
        p = line["power"].values
        text = (
            f"{name}: slope {float(res['slope']):.3f} = throughput slope {s_tps:.3f} minus power "
            f"slope {s_p:.3f} (power {np.nanmax(p):.0f} W at the shortest window, "
            f"{np.nanmin(p):.0f} W at the longest, as the batch shrinks down the logistic curve); "
            f"the law {span}"
        )
        cause = CAUSES[int(res["cause"])] if "cause" in res else "law"
        if cause != "law":
            text += f"; sweep.law's cause where it bends: {cause}"
        if "bound" in line and (line["bound"].values == 1).any():
            last = int(line["context"].values[line["bound"].values == 1].max())
            text += f" (compute-bound up to W = {_ctx(last)})"
        parts.append(text + ".")
    return Claim(
        "slope",
        "tok/W halves per doubling of the context window: slope of log2 tok/W against log2 W",
        -1.0,
        "-1 (halves per doubling)",
        SOURCE,
        cells[0],
        cells[1],
        " ".join(parts),
    )


def _claim_spread(runs, paper: float = 40.0) -> Claim:
    cal, roof = _line_hits(runs)
    cells, parts = [], []
    for hit, name in ((cal, "Calibrated"), (roof, "Roofline")):
        if hit is None:
            cells.append(Cell(note=NOT_IN_SPECS))
            continue
        run, line = hit
        tokw = line["tok_per_watt"].where(line["feasible"])
        w = line["context"].values
        spread = float(tokw.max() / tokw.min())
        where = (_where_cal(line) if run.mode == "calibrated" else _where_roof(run, line)) + (
            f"; max / min tok/W over W = {_ctx(w.min())}..{_ctx(w.max())} ({w.size} windows)"
        )
        cells.append(Cell(spread, where, run.spec.name))
        v = tokw.values
        first = float(v[np.isfinite(v)][0])
        reach = [int(c) for c, t in zip(w, v, strict=True) if np.isfinite(t) and first / t >= paper]
        reach_text = (
            f"it reaches {paper:g}x between W = {_ctx(w.min())} and {_ctx(reach[0])}"
            if reach
            else f"it never reaches {paper:g}x on this axis"
        )
        parts.append(
            f"{name}: an exact 1/W law gives {w.max() / w.min():.0f}x over "
            f"{_ctx(w.min())}..{_ctx(w.max())}; ours is {spread:.1f}x, {reach_text}."
        )
    parts.append(
        "Our spread is defined as max / min saturated tok/W over the context axis on one GPU "
        "and deployment (H100, Llama-3.1-70B TP8); the abstract does not state the range "
        f"behind its {paper:g}x ({math.log2(paper):.1f} doublings of W under the law), so the "
        "ratio depends on the window range chosen."
    )
    return Claim(
        "spread",
        "Spread of tok/W across deployments of identical hardware (context windows)",
        paper,
        f"up to {paper:g}x",
        SOURCE,
        cells[0],
        cells[1],
        " ".join(parts),
    )


def _claim_b200(runs, paper: float = 1.7, context: int = GEN_CONTEXT) -> Claim:
    h = find(runs, "roofline", context=context, **_roof_sel(H100["roofline"]))
    b = find(runs, "roofline", context=context, **_roof_sel(B200))
    cal = Cell(note="not available in calibrated mode: no published B200 profile")
    parts = []
    if h is None or b is None:
        return Claim(
            "b200_over_h100",
            "B200 tok/W over H100",
            paper,
            f"about {paper:g}x",
            SOURCE,
            cal,
            Cell(note=NOT_IN_SPECS),
            "",
        )
    run, hp = h
    _, bp = b
    ratio = _f(bp, "tok_per_watt") / _f(hp, "tok_per_watt")
    roof = Cell(ratio, _where_roof(run, bp, f"{B200} over {H100['roofline']}"), run.spec.name)
    tr = _f(bp, "throughput") / _f(hp, "throughput")
    pr = _f(bp, "power") / _f(hp, "power")
    parts.append(
        f"Roofline at W = {context}: B200 emits {tr:.2f}x the tokens/s per GPU (B = "
        f"{int(_f(bp, 'concurrency'))} vs {int(_f(hp, 'concurrency'))} sequences per TP8 replica "
        f"with {_f(bp, 'mem_capacity') / _f(hp, 'mem_capacity'):.2f}x the memory, at "
        f"{_f(bp, 'mem_bw') / _f(hp, 'mem_bw'):.2f}x the bandwidth) at {pr:.2f}x the power per "
        f"GPU ({_f(bp, 'power'):.0f} W vs {_f(hp, 'power'):.0f} W; B200's power curve is "
        f"{bp['power_source'].values.item()} from its {_f(bp, 'tdp'):.0f} W TDP, H100's "
        f"{hp['power_source'].values.item()})."
    )
    both = [
        hit
        for hit in (
            find(runs, "roofline", line=True, **_roof_sel(H100["roofline"])),
            find(runs, "roofline", line=True, **_roof_sel(B200)),
        )
    ]
    if all(both) and both[0][0] is both[1][0]:
        line = both[1][1]["tok_per_watt"] / both[0][1]["tok_per_watt"]
        w = line["context"].values
        parts.append(
            f"Over W = {_ctx(w.min())}..{_ctx(w.max())} the ratio runs "
            f"{float(line.min()):.2f}..{float(line.max()):.2f}x."
        )
    parts.append(
        "The paper's figure is a fleet-level comparison whose B200 numbers are analytical "
        "projections (its abstract: +-20% uncertainty)."
    )
    return Claim(
        "b200_over_h100",
        "B200 tok/W over H100 at matching settings",
        paper,
        f"about {paper:g}x",
        SOURCE,
        cal,
        roof,
        " ".join(parts),
    )


def _coverage(run: Run, point) -> float:
    m = run.spec.models[MOE]
    f = m.experts_per_token / m.n_experts
    b = _f(point, "concurrency")
    return f, (f if run.spec.params["expert_coverage"] == "active" else 1 - (1 - f) ** b)


def _claim_moe(runs, paper: float = 37.8, context: int = 8192) -> Claim:
    gpu = H100["roofline"]
    hit = find(runs, "roofline", context=context, **_roof_sel(gpu, MOE))
    active = find(
        runs, "roofline", {"expert_coverage": "active"}, context=context, **_roof_sel(gpu, MOE)
    )
    fp8 = find(runs, "roofline", context=context, **_roof_sel(gpu, MOE, dtype="fp8"))
    fp8a = find(
        runs,
        "roofline",
        {"expert_coverage": "active"},
        context=context,
        **_roof_sel(gpu, MOE, dtype="fp8"),
    )
    cal = Cell(note="not available in calibrated mode: no published Qwen3-235B-A22B profile")
    roof = _cell(hit, lambda r, p: _f(p, "tok_per_watt"), _where_roof)
    parts = []
    if hit:
        run, q = hit
        usable = _usable(run, q)
        kv = _f(q, "kv_budget")
        total = _f(q, "param_count")
        f, feff = _coverage(run, q)
        tp = int(q["tp"].values.item())
        w_bytes = (usable - kv) * tp / total  # bytes per weight of the point's dtype
        need = math.ceil(total * w_bytes / usable)
        pow2 = 1 << (need - 1).bit_length()
        parts.append(
            f"Roofline, {q['dtype'].values.item()} on TP{tp} (235B in "
            f"{q['dtype'].values.item()} is {total * w_bytes / 1e9:.0f} GB of weights: the "
            f"usable memory of at least {need} H100s, so TP{pow2} is the smallest power-of-two "
            f"degree that fits; Qwen3's max_position is "
            f"{int(_f(q, 'max_position'))}, so 8K is allowed): the weights take "
            f"{(usable - kv) / 1e9:.1f} GB of each GPU's {usable / 1e9:.1f} GB, leaving "
            f"{kv / 1e9:.1f} GB of KV cache: B = {int(_f(q, 'concurrency'))} sequences. With "
            f"{run.spec.params['expert_coverage']} expert coverage the B tokens of an iteration "
            f"touch 1 - (1 - {f:.4g})^B = {feff:.0%} of the routed experts, so it streams "
            f"nearly all {total / 1e9:.0f}B weights, not the "
            f"{_f(q, 'active_param_count') / 1e9:.0f}B active ones."
        )
    if active:
        parts.append(
            f'Streaming only the active experts (expert_coverage = "active", the paper\'s '
            f"upper bound; spec {active[0].spec.name}): {_fmt(_f(active[1], 'tok_per_watt'))} "
            "tok/W."
        )
    if fp8:
        text = (
            f"In fp8 (B = {int(_f(fp8[1], 'concurrency'))}): "
            f"{_fmt(_f(fp8[1], 'tok_per_watt'))} tok/W"
        )
        if fp8a:
            text += f", {_fmt(_f(fp8a[1], 'tok_per_watt'))} with active coverage"
        parts.append(text + ".")
    if hit:
        parts.append(_roofline_accounting(*hit, paper))
    parts.append("Neither mode models MoE dispatch overhead (the paper excludes it too).")
    return Claim(
        "moe_tok_per_watt_8192",
        f"Qwen3-235B-A22B tok/W at {_ctx(context)} context on H100",
        paper,
        f"about {paper:g} tok/W",
        SOURCE,
        cal,
        roof,
        " ".join(parts),
    )


def _claim_moe_ratio(runs, paper: float = 5.1, context: int = 8192) -> Claim:
    gpu = H100["roofline"]

    def ratio_of(params=None, dtype="bf16"):
        q = find(runs, "roofline", params, context=context, **_roof_sel(gpu, MOE, dtype=dtype))
        d = find(runs, "roofline", params, context=context, **_roof_sel(gpu, DENSE, dtype=dtype))
        if q is None or d is None:
            return None
        return q, d, _f(q[1], "tok_per_watt") / _f(d[1], "tok_per_watt")

    cal = Cell(note="not available in calibrated mode: no published Qwen3-235B-A22B profile")
    main = ratio_of()
    if main is None:
        return Claim(
            "moe_over_dense_8192",
            f"Qwen3-235B-A22B tok/W over Llama-3.1-70B at {_ctx(context)} on H100",
            paper,
            f"{paper:g}x",
            SOURCE,
            cal,
            Cell(note=NOT_IN_SPECS),
            "",
        )
    (run, q), (_, d), value = main
    roof = Cell(
        value,
        f"{gpu}, bf16, TP8, saturated, W = {context}: {MOE} (B = "
        f"{int(_f(q, 'concurrency'))}, {run.spec.params['expert_coverage']} expert coverage) over "
        f"{DENSE} (B = {int(_f(d, 'concurrency'))})",
        run.spec.name,
    )
    tr = _f(q, "throughput") / _f(d, "throughput")
    pr = _f(q, "power") / _f(d, "power")
    parts = [
        f"Roofline: Qwen3 emits {tr:.2f}x Llama's tokens/s per GPU at {pr:.2f}x its power: its "
        f"{_f(q, 'param_count') / 1e9:.0f}B resident weights leave room for "
        f"{int(_f(q, 'concurrency'))} sequences against Llama's {int(_f(d, 'concurrency'))}, and "
        "the iteration streams most experts."
    ]
    for params, dtype, label in (
        (
            {"expert_coverage": "active"},
            "bf16",
            "with active-expert streaming (the paper's upper bound)",
        ),
        (None, "fp8", "in fp8"),
        ({"expert_coverage": "active"}, "fp8", "in fp8 with active-expert streaming"),
    ):
        other = ratio_of(params, dtype)
        if other is not None:
            parts.append(f"The ratio is {other[2]:.2f}x {label}.")
    parts.append(
        "The paper's 5.1x takes decode time to scale with the activated weights (22B vs 70B); "
        "the roofline also charges Qwen3's KV reads and the batch its larger resident weights "
        "allow."
    )
    return Claim(
        "moe_over_dense_8192",
        f"Qwen3-235B-A22B tok/W over Llama-3.1-70B at {_ctx(context)} on H100",
        paper,
        f"{paper:g}x",
        SOURCE,
        cal,
        roof,
        " ".join(parts),
    )


def claims(runs, fleets=()) -> list[Claim]:
    """The paper's claims (arXiv 2603.17280, abstract) against the runs' numbers."""
    return [
        *_grid_claims(runs),
        *_fleet_claims(fleets),
    ]


def _grid_claims(runs) -> list[Claim]:
    return [
        _claim_tokw(runs, 4096, 17.6),
        _claim_concurrency(runs, 4096, 256),
        _claim_tokw(runs, 65536, 1.5),
        _claim_concurrency(runs, 65536, 16),
        _claim_slope(runs),
        _claim_spread(runs),
        _claim_b200(runs),
        _claim_moe(runs),
        _claim_moe_ratio(runs),
    ]


CLAIM_FIELDS = (
    "key",
    "claim",
    "paper_value",
    "paper_source",
    "calibrated_value",
    "calibrated_settings",
    "calibrated_spec",
    "calibrated_note",
    "roofline_value",
    "roofline_settings",
    "roofline_spec",
    "roofline_note",
    "ratio_calibrated",
    "ratio_roofline",
    "explanation",
)


def write_claims_csv(table: list[Claim], path: Path) -> Path:
    def num(v):
        return "" if v is None else repr(float(v))

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CLAIM_FIELDS)
        for c in table:
            w.writerow(
                [
                    c.key,
                    c.claim,
                    num(c.paper),
                    c.source,
                    num(c.calibrated.value),
                    c.calibrated.settings,
                    c.calibrated.spec,
                    c.calibrated.note,
                    num(c.roofline.value),
                    c.roofline.settings,
                    c.roofline.spec,
                    c.roofline.note,
                    num(c.ratio(c.calibrated)),
                    num(c.ratio(c.roofline)),
                    c.explanation,
                ]
            )
    return path


def _cell_html(cell: Cell) -> str:
    if cell.value is None:
        return f"<td class='na'>{html.escape(cell.note)}</td>"
    return (
        f"<td><span class='v'>{html.escape(cell.text())}</span>"
        f"<br><span class='small'>{html.escape(cell.settings)}; spec "
        f"{html.escape(cell.spec)}</span></td>"
    )


def claims_html(table: list[Claim]) -> str:
    head = (
        "<tr><th>claim</th><th>paper (source)</th><th>ours, calibrated</th>"
        "<th>ours, roofline</th><th>calibrated / paper</th><th>roofline / paper</th>"
        "<th>what explains the difference</th></tr>"
    )
    rows = []
    for c in table:
        rc, rr = c.ratio(c.calibrated), c.ratio(c.roofline)
        rows.append(
            f"<tr id='claim-{c.key}'><td>{html.escape(c.claim)}</td>"
            f"<td><span class='v'>{html.escape(c.paper_text)}</span><br>"
            f"<span class='small'>{html.escape(c.source)}</span></td>"
            f"{_cell_html(c.calibrated)}{_cell_html(c.roofline)}"
            f"<td>{'' if rc is None else html.escape(f'{rc:#.3g}')}</td>"
            f"<td>{'' if rr is None else html.escape(f'{rr:#.3g}')}</td>"
            f"<td class='small'>{html.escape(c.explanation)}</td></tr>"
        )
    return f"<table class='claims'>{head}{''.join(rows)}</table>"


# ---------------------------------------------------------------- section (g): fleets


def _fleet_gains(fr: FleetRun):
    """sweep.fleet.gains of a fleet run, H100 the baseline and B200 the upgrade where swept."""
    from sweep.fleet_sizing import gains as fleet_gains

    ds = fr.ds
    mode = ds.attrs.get("pool_mode", "roofline")
    base = H100.get(mode)
    pools = set(ds["gpu_short"].values.tolist()) & set(ds["gpu_long"].values.tolist())
    if base not in pools:
        return None
    return fleet_gains(ds, baseline=base, upgrade=B200 if B200 in pools else None)


def _slice_labels(da: xr.DataArray) -> list[str]:
    """One label per element of da (C order), naming its coordinates on the varying dims."""
    dims = [d for d in da.dims if da.sizes[d] > 1]
    if not dims:
        return ["all"] * max(da.size, 1)
    index = np.indices([da.sizes[d] for d in da.dims]).reshape(da.ndim, -1).T
    labels = []
    for row in index:
        cells = []
        for d, i in zip(da.dims, row, strict=True):
            if d in dims:
                v = da[d].values[i]
                cells.append(f"{d} {v:g}" if isinstance(v, float | np.floating) else f"{d} {v}")
        labels.append(", ".join(cells))
    return labels


def section_g(fleets, out):
    from sweep.dataset import write_netcdf
    from sweep.fleet_sizing import plot_gain

    figs, tables = [], []
    for fr in fleets:
        key = f"g-{fr.key}"
        png = Path(plot_gain(fr.ds, out / f"{key}.png"))
        data = [write_netcdf(fr.ds, out / f"{key}.nc")]
        g = _fleet_gains(fr)
        if g is not None:
            frame = g.to_dataframe()
            data.append(_write_csv(frame, out / f"{key}-gains.csv"))
            tables.append((fr, g))
        caption = (
            "Two-pool context-length routing (MODEL.md section 4): tok/W of a fleet that sends "
            "requests of length <= b_short to a pool configured for W = b_short and the rest to "
            "a pool at w_long, over the tok/W of a homogeneous fleet at w_long, per workload and "
            "arrival rate; each pool sized to the fewest GPUs whose P99 queueing wait meets the "
            f"SLO at utilisation <= {fr.ds.attrs.get('max_util', 0.85):g} (M/G/c, Kimura's "
            f"approximation on Erlang C); {fr.ds.attrs.get('pool_mode', '')} pools. Above the "
            "dashed line routing pays."
        )
        name = fr.ds.attrs.get("spec_name", fr.key)
        figs.append(Figure(key, f"{name}: routing gain against b_short", caption, png, data))
    return figs, tables


def _fleet_table_html(fr: FleetRun, g: xr.Dataset) -> str:
    cols = [
        ("b_short_baseline", "best b_short", "{:,.0f}"),
        ("routing_baseline", f"routing gain on {g.attrs['baseline']}", "{:.3g}x"),
        ("routing_upgrade", f"routing gain on {g.attrs['upgrade']}", "{:.3g}x"),
        ("generation", f"{g.attrs['upgrade']} over {g.attrs['baseline']} (homogeneous)", "{:.3g}x"),
        ("combined", "combined", "{:.3g}x"),
        ("ratio", "combined / (routing x generation)", "{:.3f}"),
    ]
    cols = [c for c in cols if c[0] in g]
    labels = _slice_labels(g[cols[0][0]])
    flat = {k: np.atleast_1d(g[k].values).ravel() for k, _, _ in cols}
    head = "<th>slice</th>" + "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in cols)
    body = []
    for i, lab in enumerate(labels[:MAX_LINES]):
        cells = [f.format(flat[k][i]) if np.isfinite(flat[k][i]) else "n/a" for k, _, f in cols]
        body.append(
            f"<tr><td>{html.escape(lab)}</td>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    name = fr.ds.attrs.get("spec_name", fr.key)
    return (
        f"<p class='small'>{html.escape(name)}: gains at the best b_short per slice "
        "(sweep.fleet.gains)</p>"
        f"<table class='data'><tr>{head}</tr>{''.join(body)}</table>"
    )


FLEET_CLAIMS = (
    # key, variable of sweep.fleet.gains, claim, paper value, needs the upgrade GPU
    (
        "fleet_routing",
        "routing_baseline",
        "Two-pool context-length routing (FleetOpt) over a homogeneous H100 fleet",
        2.5,
        False,
    ),
    (
        "fleet_generation",
        "generation",
        "Homogeneous B200 fleet over homogeneous H100 fleet",
        1.7,
        True,
    ),
    (
        "fleet_combined",
        "combined",
        "Two-pool routing on B200 over a homogeneous H100 fleet",
        4.25,
        True,
    ),
)


def _by_dimension(da: xr.DataArray) -> str:
    """Median [min..max] of da per value of each of its varying dimensions, as text."""
    parts = []
    for d in (d for d in da.dims if da.sizes[d] > 1):
        cells = []
        for v in da[d].values:
            x = da.sel({d: v}).values.ravel()
            x = x[np.isfinite(x)]
            name = f"{v:g}" if isinstance(v, float | np.floating) else str(v)
            cells.append(
                f"{name} {np.median(x):.3g}x [{x.min():.3g}..{x.max():.3g}]"
                if x.size
                else f"{name} n/a"
            )
        parts.append(f"by {d}: " + ", ".join(cells))
    return "; ".join(parts) if parts else f"{float(np.nanmedian(da.values)):.3g}x"


def _fleet_claims(fleets) -> list[Claim]:
    hits = {}
    for mode in ("calibrated", "roofline"):
        for fr in fleets:
            if fr.ds.attrs.get("pool_mode", "roofline") != mode:
                continue
            g = _fleet_gains(fr)
            if g is not None:
                hits[mode] = (fr, g)
                break
    table = []
    for key, var, text, paper, upgrade in FLEET_CLAIMS:
        cells, parts = {}, []
        for mode in ("calibrated", "roofline"):
            hit = hits.get(mode)
            if hit is None or var not in hit[1]:
                note = NOT_IN_SPECS
                if mode == "calibrated" and upgrade:
                    note = "not available in calibrated mode: no published B200 profile"
                cells[mode] = Cell(note=note)
                continue
            fr, g = hit
            v = g[var].values.ravel()
            ok = v[np.isfinite(v)]
            if not ok.size:
                cells[mode] = Cell(note="no feasible fleet in the spec")
                continue
            dims = [d for d in g[var].dims if g.sizes[d] > 1]
            over = f" over {', '.join(dims)}" if dims else ""
            name = fr.ds.attrs.get("spec_name", fr.key)
            cells[mode] = Cell(
                float(np.median(ok)),
                f"fleet spec {name}, {mode} pools, baseline {g.attrs['baseline']}"
                + (f", upgrade {g.attrs['upgrade']}" if upgrade else "")
                + f"; median of {ok.size} slice(s){over} at the best b_short, "
                f"range {ok.min():.3g}..{ok.max():.3g}",
                name,
            )
            sentence = f"{mode.capitalize()} pools: {_by_dimension(g[var])}."
            if var == "combined" and "ratio" in g:
                r = float(np.nanmedian(g["ratio"].values))
                verdict = "they multiply" if abs(r - 1) < 0.05 else "they do not quite multiply"
                sentence += (
                    f" combined / (routing x generation) = {r:.3f} (median): {verdict}; the ratio "
                    "is the routing gain on B200 over that on H100."
                )
            if var == "routing_baseline":
                rej = np.atleast_1d(fr.ds["rejected_share"].values).ravel()
                sentence += (
                    f" Requests longer than w_long ({np.nanmin(rej):.1%}..{np.nanmax(rej):.1%} "
                    "of them) are served by neither fleet."
                )
                if ok.min() < 1:
                    sentence += (
                        " Below 1, two pools of whole replicas cost more GPUs than one "
                        "homogeneous pool (assumption: pools are sized in whole TP replicas, at "
                        "least one each)."
                    )
            parts.append(sentence)
        if var == "generation":
            parts.append(
                "Assumption: homogeneous fleets at w_long sized to the same SLO; B200's power "
                "curve is projected from its TDP (MODEL.md section 2), the paper's B200 numbers "
                "are projections too (+-20%, its abstract)."
            )
        else:
            parts.append(
                "Assumption: the gain depends on the request-length workload, the arrival rate "
                "and the SLO; the abstract does not state the paper's, so compare the range, not "
                "one number."
            )
        table.append(
            Claim(
                key,
                text,
                paper,
                f"about {paper:g}x",
                SOURCE,
                cells["calibrated"],
                cells["roofline"],
                " ".join(parts),
            )
        )
    return table


# ---------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.small{font-size:.82em;color:#555}
table{border-collapse:collapse;margin:1em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.35em .5em;vertical-align:top;text-align:left}
th{background:#f3f3f3}.v{font-weight:600;font-size:1.05em}.na{color:#777;font-style:italic}
table.claims td:nth-child(7){min-width:28em}nav a{margin-right:1em}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
"""

SECTIONS = (
    ("a", "(a) tok/W against context"),
    ("b", "(b) Concurrency against context"),
    ("c", "(c) The law's slope"),
    ("d", "(d) Elasticities per lever"),
    ("e", "(e) GPU-generation gain over H100"),
    ("f", "(f) The paper's claims"),
    ("g", "(g) Fleets: two-pool routing"),
    ("made", "How this was made"),
)

INTRO = {
    "a": "Saturated tok/W (B = B_max) against the context window W. The 1/W law (Chen et al. "
    "2026) predicts a straight line of slope -1 on these axes where the KV cache bounds "
    "concurrency and power is flat.",
    "b": "Sequences in flight per replica. In calibrated mode n_max W is constant; in roofline "
    "mode B_max = floor(KV budget / (KV bytes per token x reserved window)).",
    "c": "Per slice, the least-squares slope of log2(tok/W) against log2(W) (sweep.law): -1 is "
    "the law. Where it bends is a result: compute-bound batches at short windows, the power "
    "curve leaving its plateau at small batches, weights dominating the iteration.",
    "d": "Which inputs move tok/W most: elasticities d ln(tok/W) / d ln(x) (sweep.grad).",
    "e": "How much one GPU generation buys at each window, at identical model and settings.",
    "f": "Each claim of the paper's abstract (arXiv 2603.17280) with our value in both modes, "
    "read from the datasets computed for this page (full precision in claims.csv). "
    "Explanations are generated from the computed numbers; sentences about modelling "
    "assumptions (not numbers) are static.",
    "g": "Fleet tok/W gain of two-pool context-length routing over a homogeneous fleet against "
    "the routing threshold b_short (sweep.fleet).",
}


def _figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    links = " · ".join(
        f"<a href='{html.escape(p.name)}'>data ({p.suffix[1:]}: {html.escape(p.name)})</a>"
        for p in fig.data
    )
    return (
        f"<figure id='{html.escape(fig.key)}'><img alt='{html.escape(fig.title)}' "
        f"src='data:image/png;base64,{data}'><figcaption><b>{html.escape(fig.title)}.</b> "
        f"{html.escape(fig.caption)} {links} · <a href='{html.escape(fig.png.name)}'>PNG</a>"
        "</figcaption></figure>"
    )


def _footer(runs, fleets, seconds: float) -> str:
    import jax

    from sweep.dataset import package_version

    device = jax.devices()[0]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    rows = "".join(
        f"<tr><td>{html.escape(r.spec.name)}</td><td>{html.escape(r.label)}</td>"
        f"<td>{r.mode}</td><td>{r.spec.precision}</td><td>{r.ds['tok_per_watt'].size:,}</td>"
        f"<td><a href='{html.escape(r.key)}.nc'>{html.escape(r.key)}.nc</a></td></tr>"
        for r in runs
    ) + "".join(
        f"<tr><td>{html.escape(f.ds.attrs.get('spec_name', f.key))}</td>"
        f"<td>{html.escape(f.label)}</td><td>fleet</td><td></td><td></td>"
        f"<td><a href='g-{html.escape(f.key)}.nc'>g-{html.escape(f.key)}.nc</a></td></tr>"
        for f in fleets
    )
    texts = "".join(
        f"<details><summary>{html.escape(r.spec.name)} spec</summary>"
        f"<pre>{html.escape(r.spec.text)}</pre></details>"
        for r in runs
    )
    return (
        "<table class='data'><tr><th>spec</th><th>file</th><th>mode</th><th>precision</th>"
        f"<th>points</th><th>dataset</th></tr>{rows}</table>{texts}"
        f"<p>oneoverw-sweep {html.escape(package_version())}, JAX {html.escape(jax.__version__)} "
        f"({html.escape(jax.default_backend())}, device {html.escape(str(device.platform))}:"
        f"{html.escape(getattr(device, 'device_kind', ''))}); built {now} in {seconds:.1f} s by "
        "<code>sweep report</code> (sweep.run, sweep.law, sweep.grad, sweep.fleet). Physics: "
        "MODEL.md; the paper: Chen et al. 2026, "
        f"<a href='{PAPER_URL}'>{PAPER}</a>; profiles: inference-fleet-sim "
        "(arXiv 2603.16054). Not modelled: prefill interference, tensor-parallel all-reduce, "
        "expert-parallel dispatch, speculative decoding, host and cooling power.</p>"
    )


def render(runs, fleets, out: Path, t0: float) -> str:
    """Every section's figures and data into ``out``; the page as a string."""
    figs = {
        "a": section_a(runs, out),
        "b": section_b(runs, out),
    }
    figs["c"], law_tables = section_c(runs, out)
    figs["d"] = section_d(runs, out)
    figs["e"] = section_e(runs, out)
    figs["g"], fleet_tables = section_g(fleets, out)
    table = claims(runs, fleets)
    write_claims_csv(table, out / "claims.csv")
    for run in runs:
        from sweep.dataset import write_netcdf

        write_netcdf(run.ds, out / f"{run.key}.nc")

    body = []
    nav = " ".join(f"<a href='#{k}'>{html.escape(t)}</a>" for k, t in SECTIONS)
    for k, title in SECTIONS:
        if k == "made":
            continue
        body.append(f"<section id='{k}'><h2>{html.escape(title)}</h2>")
        body.append(f"<p>{html.escape(INTRO[k])}</p>")
        if k == "f":
            body.append(claims_html(table))
            body.append("<p class='small'><a href='claims.csv'>data (csv: claims.csv)</a></p>")
        if k == "c":
            body.extend(_law_table_html(r, frame) for r, frame in law_tables)
        if k == "g" and not figs["g"]:
            body.append("<p class='na'>No fleet spec was given to this report.</p>")
        if k == "g":
            body.extend(_fleet_table_html(fr, g) for fr, g in fleet_tables)
        body.extend(_figure_html(f) for f in figs.get(k, []))
        body.append("</section>")
    seconds = time.perf_counter() - t0
    body.append(f"<section id='made'><h2>How this was made</h2>{_footer(runs, fleets, seconds)}")
    body.append("</section>")
    title = "The 1/W law: tokens per joule of LLM inference"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title>"
        f"<style>{CSS}</style></head><body><h1>{title}</h1>"
        f"<p>Sweeps of tokens per joule (tok/W) against the serving context window, GPU "
        f"generation and model, set against the claims of Chen et al. 2026, "
        f"<a href='{PAPER_URL}'>{PAPER}</a>. This page is self-contained: figures are embedded; "
        "the data behind each is linked beside it.</p>"
        f"<nav>{nav}</nav>{''.join(body)}</body></html>"
    )


def report(specs=None, out="outputs/report") -> Path:
    """Build the report from ``specs`` (default: the shipped specs) into ``out``; returns the
    path of ``index.html``."""
    from sweep.dataset import atomic_path

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        runs, fleets = compute(specs)
        page = render(runs, fleets, out, t0)
    index = out / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return index


# ---------------------------------------------------------------- CLI


def cmd_report(args) -> int:
    t0 = time.perf_counter()
    index = report(args.specs or None, args.output)
    print(f"wrote {index} ({time.perf_counter() - t0:.1f} s)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="build the offline HTML report (figures, data, the paper's claims)"
    )
    p.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help="grid or fleet specs (default: grids/paper.toml, grids/report-*.toml, "
        "grids/fleet.toml)",
    )
    p.add_argument(
        "-o", "--output", default="outputs/report", help="output folder (default outputs/report)"
    )
    p.set_defaults(fn=cmd_report)
