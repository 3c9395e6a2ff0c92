"""Figures (matplotlib, headless Agg): what people would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series(ds, var: str = "tok_per_watt", over: str = "context", max_series: int = 24):
    """(label, x, y) per slice of ``var`` over ``over``; other dims flattened into labels."""
    da = ds[var]
    other = [d for d in da.dims if d != over]
    x = ds[over].values
    if not other:
        return [(var, x, da.values)]
    stacked = da.stack(series=other).transpose("series", over)
    labels = ["/".join(str(v) for v in np.atleast_1d(idx)) for idx in stacked["series"].values]
    return [(lab, x, row) for lab, row in zip(labels[:max_series], stacked.values, strict=False)]


def plot_law(ds, path, var: str = "tok_per_watt", title: str | None = None) -> Path:
    """tok/W against context, log-log, one line per slice, with the 1/W guide line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    anchor = None
    for label, x, y in series(ds, var):
        ok = np.isfinite(y)
        if not ok.any():
            continue
        ax.plot(x[ok], y[ok], marker="o", ms=3, label=label)
        if anchor is None:
            anchor = (x[ok][0], y[ok][0])
    if anchor is not None:
        x = ds["context"].values.astype(float)
        ax.plot(x, anchor[1] * anchor[0] / x, "k--", lw=1, label="1/W guide")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("context window W (tokens)")
    units = ds[var].attrs.get("long_name", var)
    ax.set_ylabel(units)
    ax.set_title(title or f"{ds.attrs.get('spec_name', '')}: {units} against the context window")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- report figures
# Figures of ``sweep report``; each draws one figure into ``path`` (PNG) and returns the path.

_MARKERS = "osD^v<>pPX*h"


def _colors(n: int):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_lines(
    lines,
    path,
    title: str = "",
    xlabel: str = "context window W (tokens)",
    ylabel: str = "",
    logy: bool = True,
    guide: str | None = "1/W",
    hline: float | None = None,
) -> Path:
    """One line per ``(label, x, y)`` (NaN points skipped), log2 x axis.

    ``guide="1/W"`` adds a dashed line of slope -1 just below the lowest line's first point
    (kept apart from the data so that it stays visible); ``hline`` a dotted horizontal
    reference (e.g. 1 for ratios).
    """
    plt = _pyplot()
    lines = list(lines)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    starts = []
    for (label, x, y), color, i in zip(lines, _colors(len(lines)), range(len(lines)), strict=True):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(y) & (y > 0 if logy else True)
        if not ok.any():
            continue
        marker = _MARKERS[i % len(_MARKERS)]
        ax.plot(x[ok], y[ok], marker=marker, ms=3.5, lw=1.4, color=color, label=label)
        starts.append((x[ok][0], y[ok][0]))
    if guide == "1/W" and starts:
        x0 = min(s[0] for s in starts)
        y0 = min(s[1] * s[0] / x0 for s in starts) / 1.5
        xs = np.array(sorted({float(v) for _, x, _ in lines for v in np.asarray(x)}))
        ax.plot(
            xs, y0 * x0 / xs, "--", color="0.35", lw=1.2, zorder=1, label="1/W guide (slope -1)"
        )
    if hline is not None:
        ax.axhline(hline, color="k", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if lines:
        ax.legend(fontsize=7, ncol=2 if len(lines) > 6 else 1, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_heatmap(
    values,
    rows,
    cols,
    path,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    cbar_label: str = "",
    center: float | None = None,
    fmt: str = "{:.2f}",
    text=None,
) -> Path:
    """A 2-D field (rows x cols) as a heat map with each cell's value written in it.

    NaN cells (infeasible slices) are drawn grey and marked "n/a". With ``center`` the
    diverging colour map is centred on that value (e.g. -1 for the law's slope). ``text``
    (rows x cols strings) replaces the written values.
    """
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm

    values = np.asarray(values, dtype=float)
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(
        figsize=(max(5.0, 0.75 * n_cols + 2.5), max(2.4, 0.42 * n_rows + 1.6)), dpi=110
    )
    finite = values[np.isfinite(values)]
    norm = None
    if center is not None and finite.size:
        span = max(float(np.max(np.abs(finite - center))), 0.05)
        norm = TwoSlopeNorm(vcenter=center, vmin=center - span, vmax=center + span)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            label = text[i][j] if text is not None else fmt.format(v) if np.isfinite(v) else "n/a"
            r, g, b, _ = image.cmap(image.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, label, ha="center", va="center", fontsize=7, color="w" if dark else "k")
    ax.set_xticks(range(n_cols), [str(c) for c in cols], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [str(r) for r in rows], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=cbar_label, shrink=0.9)
    fig.tight_layout()
    return _save(fig, path)


def plot_grouped_bars(
    values, groups, members, path, title: str = "", ylabel: str = "", logy: bool = False
) -> Path:
    """Grouped bars: ``values[g, m]`` for each group g (x axis) and member m (one colour each)."""
    plt = _pyplot()
    values = np.asarray(values, dtype=float)
    n_groups, n_members = values.shape
    width_in = min(13.0, max(7.0, 0.1 * n_groups * n_members + 2.5))
    fig, ax = plt.subplots(figsize=(width_in, 5), dpi=110)
    width = 0.8 / max(n_members, 1)
    x = np.arange(n_groups)
    for m, (member, color) in enumerate(zip(members, _colors(n_members), strict=True)):
        offset = (m - (n_members - 1) / 2) * width
        heights = np.where(np.isfinite(values[:, m]), values[:, m], 0.0)
        ax.bar(x + offset, heights, width, label=str(member), color=color)
    ax.set_xticks(x, [str(g) for g in groups], rotation=35, ha="right", fontsize=8)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(n_members, 6), loc="upper right")
    fig.tight_layout()
    return _save(fig, path)
