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
