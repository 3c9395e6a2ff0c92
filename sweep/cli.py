"""The ``sweep`` command line.

Exit codes: 0 ok, 2 bad input (a message naming the field and the allowed values, and no
output file), 130 interrupted (no output file either).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

from sweep.errors import SpecError

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


def default_output(name: str, suffix: str = ".nc") -> Path:
    return Path("outputs") / f"{name}{suffix}"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


# ---------------------------------------------------------------- run / info


def summarise(ds, seconds: float | None = None) -> str:
    """Points, time, feasible share, the tok/W range, and a small table when the grid is small."""
    tokw = ds["tok_per_watt"].values
    feasible = ds["feasible"].values.astype(bool)
    n = tokw.size
    lines = [
        f"{ds.attrs.get('spec_name', '')}: {ds.attrs.get('mode', '')} mode, "
        f"{ds.attrs.get('precision', '')}, dims {dict(ds.sizes)}"
    ]
    if seconds is not None:
        lines.append(f"points: {n:,}  seconds: {seconds:.2f}  points/s: {n / seconds:,.0f}")
    else:
        lines.append(f"points: {n:,}")
    lines.append(f"feasible: {feasible.mean():.1%}")
    if feasible.any():
        lo, hi = np.nanmin(tokw), np.nanmax(tokw)
        lines.append(f"tok/W (tokens per joule): {lo:.4g} .. {hi:.4g}")
        lines += _small_table(ds)
    return "\n".join(lines)


def _small_table(ds, max_rows: int = 16, max_series: int = 8) -> list[str]:
    if "context" not in ds.dims or ds.sizes["context"] > max_rows:
        return []
    other = [d for d in ds["tok_per_watt"].dims if d != "context"]
    n_series = int(np.prod([ds.sizes[d] for d in other])) if other else 1
    if n_series > max_series:
        return []
    from sweep.plots import series

    tokw = ds["tok_per_watt"].transpose("context", *other).values.reshape(ds.sizes["context"], -1)
    conc = ds["concurrency"].transpose("context", *other).values.reshape(ds.sizes["context"], -1)
    labels = [lab for lab, _, _ in series(ds)] if other else ["value"]
    head = f"{'context':>9} " + " ".join(f"{lab[:22]:>24}" for lab in labels)
    rows = ["", "tok/W (sequences in flight) by context:", head]
    for i, ctx in enumerate(ds["context"].values):
        cells = []
        for j in range(tokw.shape[1]):
            cells.append(
                f"{'infeasible':>24}"
                if np.isnan(tokw[i, j])
                else f"{tokw[i, j]:>14.4g} ({conc[i, j]:>6.0f})  "
            )
        rows.append(f"{ctx:>9} " + " ".join(cells))
    return rows


def cmd_run(args) -> int:
    import sweep
    from sweep import stream
    from sweep.dataset import write_netcdf
    from sweep.spec import load_spec

    spec = load_spec(args.spec, precision=args.precision)
    out = Path(args.output) if args.output else default_output(spec.name)
    progress = None if not args.quiet else False
    route = stream.route(spec, args)  # in memory, streamed to disk, reduced, or on a cluster
    if route.engine != "memory":
        return stream.run_routed(route, spec, out, args, progress)
    t0 = time.perf_counter()
    ds = sweep.run(spec, chunk_size=route.chunk, progress=progress)
    write_netcdf(ds, out)
    seconds = time.perf_counter() - t0
    print(summarise(ds, seconds))
    print(f"wrote {out}")
    if args.plot:
        from sweep.plots import plot_law

        print(f"wrote {plot_law(ds, out.with_suffix('.png'))}")
    return EXIT_OK


def cmd_info(args) -> int:
    import sweep

    ds = sweep.open(args.path)
    print(f"{args.path}")
    for key in ("title", "mode", "precision", "created", "backend", "device", "source"):
        if key in ds.attrs:
            print(f"  {key}: {ds.attrs[key]}")
    print(f"  dims: {dict(ds.sizes)}")
    print("  variables:")
    for name, var in ds.data_vars.items():
        print(
            f"    {name:<18} {str(var.dtype):<8} {var.attrs.get('units', ''):<8} "
            f"{var.attrs.get('long_name', '')}"
        )
    if "tok_per_watt" in ds and "feasible" in ds:
        print(summarise(ds.load()))
    ds.close()
    return EXIT_OK


# ---------------------------------------------------------------- catalogs


def cmd_catalog(args) -> int:
    from sweep import catalog

    describe = {
        "gpus": catalog.describe_gpus,
        "models": catalog.describe_models,
        "profiles": catalog.describe_profiles,
    }
    print(describe[args.which]())
    return EXIT_OK


def cmd_import_model(args) -> int:
    from sweep import catalog

    model = catalog.import_model(args.config, key=args.key)
    print(catalog.model_to_toml(model))
    return EXIT_OK


# ---------------------------------------------------------------- wiring


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep", description="Tokens per joule of LLM inference, swept over design grids."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="evaluate a grid spec and write a netCDF dataset")
    p.add_argument("spec", help="grid spec (TOML file)")
    p.add_argument("-o", "--output", help="output path (default outputs/<name>.nc)")
    p.add_argument("--precision", choices=("float32", "float64"), help="override the spec's")
    p.add_argument("--chunk-size", type=positive_int, help="points per compiled chunk")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--plot", action="store_true", help="also plot tok/W against context (PNG)")
    from sweep.stream import memory_arg

    p.add_argument(
        "--memory",
        type=memory_arg,
        metavar="SIZE",
        help="memory budget, e.g. 2GB or 512MiB (default 25%% of RAM, at most 4 GB): results "
        "over half of it stream to disk block by block; it also sizes the chunks",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted streamed run of the same spec and output",
    )
    p.add_argument(
        "--reduce",
        action="append",
        choices=("law", "extrema"),
        help="write only a reduction, computed on the fly (repeatable): law = per-slice slope "
        "of log2(tok/W) vs log2(context) -> NAME.law.nc; extrema -> NAME.extrema.nc",
    )
    p.add_argument(
        "--over",
        metavar="DIMS",
        help="dims for --reduce extrema, comma-separated (default: all)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the blocks as dask.distributed tasks: a scheduler address, or 'local'",
    )
    p.add_argument("--workers", type=positive_int, help="workers of --scheduler local")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("info", help="summarise a written dataset")
    p.add_argument("path")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("catalog", help="print the GPU, model or profile catalog with sources")
    p.add_argument("which", choices=("gpus", "models", "profiles"))
    p.set_defaults(fn=cmd_catalog)

    p = sub.add_parser("import-model", help="read a local Hugging Face config.json")
    p.add_argument("config", help="path to config.json")
    p.add_argument("--key", help="catalog key (default: from the folder or _name_or_path)")
    p.set_defaults(fn=cmd_import_model)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


# Each of these modules defines ``register(subparsers)`` adding its own subcommand(s).
COMMAND_MODULES = ("sweep.law_fit", "sweep.elasticity", "sweep.html_report", "sweep.fleet_sizing")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except SpecError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sweep: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
