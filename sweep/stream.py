"""Out-of-core sweeps: evaluate block by block and stream each block into a netCDF4 file.

When a result would not fit the memory budget (``sweep run --memory SIZE``; default
``default_memory()``: 25% of physical RAM, at most 4 GB), the grid is evaluated in blocks and
each block is written to disk as soon as it is computed, so that resident memory is bounded
by the block size, not by the grid size.

Blocks. A chunk of the engine is a contiguous range of the flat C-order index, which is not
a hyperslab of the grid in general. Here the grid is cut into *blocks* that are both: fix the
indices of the leading axes ``0 .. k-1``, take ``rows`` consecutive indices of axis ``k``, and
all of the trailing axes (``Blocks``). ``k`` is the first axis whose trailing product fits the
chunk, ``rows`` the most of its indices that fit (rounded so that the blocks of an axis are
even). Each block is one hyperslab (one write per variable) and one flat range, which the
engine's fixed-shape chunk function evaluates from its offset; the last block of each row of
axis ``k`` may be shorter and is padded, like the engine's last chunk. The HDF5 chunks of the
file are cut so that every block covers whole HDF5 chunks (``Blocks.storage_chunks``): each
HDF5 chunk is compressed and written exactly once. ``flat_slabs`` splits any other flat
range into its few hyperslabs (used by the reducers, which accept any chunking).

Why netCDF4-python incremental writes (and not zarr region writes converted at the end): one
pass over the data, no second copy on disk, no conversion step, and the partial file already
is the final file, so finishing is a rename. zarr is used where several processes must write
at once (``sweep.cluster``); an HDF5 file has a single writer.

File. The partial file ``.NAME.nc.partial`` beside the output is created with the same
dimensions, coordinates, variables (dtype, ``_FillValue``, attributes, zlib + shuffle) and
global attributes as ``write_netcdf(assemble(...))`` writes for the in-memory result: the
coordinates and global attributes are written by xarray itself, and each data variable's
dtype and attributes come from xarray's CF encoder. Differences: the HDF5 chunk shapes (the
in-memory write leaves them to the netCDF library), the ``created``/``history``/
``compute_seconds`` attributes, ``chunk_points`` (the compiled block size), and the order of
variables in the file (coordinates first; xarray reads the same dataset). On success it is
renamed onto the output (``os.replace``, atomic).

Progress and ``--resume``. After each block the file is flushed (``sync``) and then a sidecar
``.NAME.nc.partial.json`` is replaced atomically with the number of blocks done, the spec text,
precision, grid and block layout. ``sweep run --resume`` reopens the partial file and
continues from the first block not recorded; it refuses (``SpecError``) when the spec text,
precision or an explicitly given ``--chunk-size`` differ from the record. Blocks after the
recorded one may have been partly written and are simply written again, so a resumed run
gives the same data as an uninterrupted one (same blocks, same compiled chunk). SIGTERM and
Ctrl-C stop the run after the block being written (a second one stops it at once) and close
the file cleanly; a SIGKILL in the middle of an HDF5 write can leave the file unreadable
(HDF5 has no journal), in which case resume says so and the run must restart.
The output path itself never holds a partial file.

Memory. The budget bounds the sweep's working set (not the ~0.3 GB of the interpreter and
its libraries). XLA reports the temporary bytes of a probe chunk (``memory_analysis``); a block
holds its temporaries plus its outputs about three times (the block being written, the next
one being computed, the writer's copies), and blocks are sized to a quarter of the budget. A
result is streamed when it exceeds half the budget; smaller results are evaluated in memory
(result + chunk: at most three quarters of the budget). Measured on the 1.07e8-point
``grids/hundred-million.toml`` (float32, 4.5 GB of results, 2 CPU cores): ``--memory 2GB``
peaked at 0.84 GB resident in 32 s, the default (4 GB here) at 1.41 GB in 30 s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.errors import SpecError

GB = 1_000_000_000
MAX_DEFAULT_MEMORY = 4 * GB
MIN_CHUNK_POINTS = 4096
STORAGE_CHUNK_POINTS = 1 << 20  # target points per HDF5 / zarr chunk (4 MB of float32)
RECORD_FORMAT = 1

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


# ---------------------------------------------------------------- memory budget


def parse_size(text: str) -> int:
    """Bytes in ``2GB``, ``512MB``, ``1.5G``, ``3GiB`` or ``1000000`` (k, M, G, T are powers of
    1000; KiB, MiB, GiB, TiB powers of 1024)."""
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("kmgtib")
    unit = s[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit not in _UNITS or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a size such as 2GB, 512MB or 3GiB")
    return int(value * _UNITS[unit])


def memory_arg(text: str) -> int:
    """``parse_size`` for argparse (``--memory``)."""
    import argparse

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_memory() -> int:
    """25% of physical RAM (``os.sysconf``), at most 4 GB; 1 GB where RAM cannot be read."""
    ram = physical_memory()
    return min(MAX_DEFAULT_MEMORY, ram // 4) if ram else GB


def output_dtypes(problem) -> dict[str, np.dtype]:
    """The kept outputs and their dtypes, in the order the engine returns them (no compile)."""
    import jax
    import jax.numpy as jnp

    from sweep.engine import make_chunk_fn

    index = jnp.int64 if jax.config.jax_enable_x64 else jnp.int32
    shapes = jax.eval_shape(make_chunk_fn(problem, 1, jax.local_devices()[:1]), index(0))
    return {k: np.dtype(v.dtype) for k, v in shapes.items()}


def output_bytes_per_point(problem) -> int:
    return sum(d.itemsize for d in output_dtypes(problem).values())


def temp_bytes_per_point(problem, devices=None, probe: int = 1 << 14) -> float:
    """XLA's temporary bytes per point of a compiled chunk (a probe compile)."""

    from sweep.engine import chunk_devices, index_dtype_for, make_chunk_fn

    n = len(chunk_devices(devices))
    index = index_dtype_for(problem.size + probe * n)
    try:
        compiled = make_chunk_fn(problem, probe * n, devices).lower(index(0)).compile()
        analysis = compiled.memory_analysis()
        return analysis.temp_size_in_bytes * n / (probe * n) if analysis else math.nan
    except Exception:  # noqa: BLE001 - no analysis on this backend: use the fallback
        return math.nan


def chunk_for_budget(
    problem, memory: int, copies: float = 3.0, devices=None, extra: float = 0.0
) -> int:
    """Points per chunk whose working set fits a quarter of ``memory``.

    Working set per point: XLA's temporaries, ``copies`` x the outputs, and ``extra`` bytes
    (a consumer's own temporaries).
    """
    out = output_bytes_per_point(problem)
    share = memory // 4  # the rest: HDF5 and Python objects, allocator slack, a result in memory
    if problem.size * (16 * out + 64 + extra) <= share:  # surely fits: skip the probe compile
        return problem.size
    temp = temp_bytes_per_point(problem, devices)
    if not math.isfinite(temp):
        temp = 8.0 * out
    per_point = temp + copies * out + extra + 16
    return int(max(MIN_CHUNK_POINTS, min(problem.size, share // per_point)))


@dataclass(frozen=True)
class Plan:
    stream: bool  # write block by block (the result exceeds half the budget)
    chunk: int  # points per compiled chunk (the most points of a block when streaming)
    memory: int
    result_bytes: int


def plan(problem, memory: int | None = None, chunk_size: int | None = None, devices=None):
    """Stream or not, and the chunk size: given, else picked from the memory budget."""
    memory = memory or default_memory()
    result = problem.size * output_bytes_per_point(problem)
    stream = result > memory // 2
    chunk = chunk_size or chunk_for_budget(problem, memory, 3.0 if stream else 2.0, devices)
    return Plan(stream, max(1, min(chunk, problem.size)), memory, result)


# ---------------------------------------------------------------- blocks and hyperslabs


def _trailing(shape: Sequence[int]) -> list[int]:
    """T[k] = product of shape[k+1:]."""
    return [math.prod(shape[k + 1 :]) for k in range(len(shape))]


@dataclass(frozen=True)
class Blocks:
    """The grid cut into hyperslab blocks: ``rows`` indices of ``axis``, all trailing axes.

    A sequence of flat ``(start, stop)`` ranges in increasing order (``iter_chunks(ranges=)``).
    ``unit`` is the HDF5/zarr chunk length along ``axis``; ``rows`` is a multiple of it unless
    there is a single block along the axis.
    """

    shape: tuple[int, ...]
    axis: int
    rows: int
    unit: int

    @property
    def trailing(self) -> int:
        return math.prod(self.shape[self.axis + 1 :])

    @property
    def chunk(self) -> int:
        """Points per compiled chunk (the largest block)."""
        return self.rows * self.trailing

    @property
    def per_row(self) -> int:
        return math.ceil(self.shape[self.axis] / self.rows)

    def __len__(self) -> int:
        return math.prod(self.shape[: self.axis]) * self.per_row

    def _split(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        prefix, j = divmod(i, self.per_row)
        lo = j * self.rows
        return prefix, lo, min(lo + self.rows, self.shape[self.axis])

    def __getitem__(self, i: int) -> tuple[int, int]:
        prefix, lo, hi = self._split(i)
        s, t = self.shape[self.axis], self.trailing
        return (prefix * s + lo) * t, (prefix * s + hi) * t

    def slab(self, i: int) -> tuple[slice, ...]:
        prefix, lo, hi = self._split(i)
        lead = np.unravel_index(prefix, self.shape[: self.axis]) if self.axis else ()
        return (
            tuple(slice(int(p), int(p) + 1) for p in lead)
            + (slice(lo, hi),)
            + tuple(slice(0, n) for n in self.shape[self.axis + 1 :])
        )

    def storage_chunks(self, target: int = STORAGE_CHUNK_POINTS) -> tuple[int, ...]:
        """HDF5/zarr chunk shape: every block is a union of whole storage chunks."""
        k, shape, t = self.axis, self.shape, _trailing(self.shape)
        if self.rows * t[k] <= target:
            return (1,) * k + (self.rows,) + tuple(shape[k + 1 :])
        if t[k] <= target:
            return (1,) * k + (self.unit,) + tuple(shape[k + 1 :])
        k2 = next(j for j in range(k + 1, len(shape)) if t[j] <= target)
        return (1,) * k2 + (min(shape[k2], target // t[k2]),) + tuple(shape[k2 + 1 :])

    def record(self) -> dict:
        return {"axis": self.axis, "rows": self.rows, "unit": self.unit, "points": self.chunk}


def choose_blocks(shape, max_points: int, target: int = STORAGE_CHUNK_POINTS) -> Blocks:
    """Blocks of at most ``max_points`` points (at least one trailing row of the last axis)."""
    shape = tuple(int(n) for n in shape)
    if not shape:
        raise ValueError("a grid needs at least one axis")
    max_points = max(1, int(max_points))
    t = _trailing(shape)
    if math.prod(shape) <= max_points:
        unit = min(shape[0], max(1, target // t[0]))
        return Blocks(shape, 0, shape[0], unit)
    k = next(j for j in range(len(shape)) if t[j] <= max_points)
    s = shape[k]
    most = min(s, max_points // t[k])
    unit = max(1, min(s, target // t[k], most)) if t[k] <= target else 1
    rows = unit * max(1, most // unit)
    even = math.ceil(s / math.ceil(s / rows))  # as many blocks, evenly filled
    rows = unit * math.ceil(even / unit)
    return Blocks(shape, k, rows, unit)


def flat_slabs(start: int, stop: int, shape) -> list[tuple[int, int, tuple[slice, ...]]]:
    """The flat range [start, stop) of a C-order grid as hyperslabs: (lo, hi, slices) each.

    At most 2 (ndim - 1) + 1 of them, in increasing order; each is a contiguous flat range
    whose points, reshaped to the slab's shape, are the slab.
    """
    shape = tuple(int(n) for n in shape)
    t = _trailing(shape) + [1]
    out: list[tuple[int, int, tuple[slice, ...]]] = []

    def emit(prefix):
        slices = prefix + tuple(slice(0, n) for n in shape[len(prefix) :])
        lo = sum(s.start * t[d] for d, s in enumerate(slices))
        out.append((lo, lo + math.prod(s.stop - s.start for s in slices), slices))

    def rec(a, b, dim, prefix):
        if a >= b:
            return
        if a == 0 and b == math.prod(shape[dim:]):
            emit(prefix)
            return
        ia, ra = divmod(a, t[dim])
        ib, rb = divmod(b, t[dim])
        if ia == ib:
            rec(ra, rb, dim + 1, prefix + (slice(ia, ia + 1),))
            return
        if ra:
            rec(ra, t[dim], dim + 1, prefix + (slice(ia, ia + 1),))
            ia += 1
        if ib > ia:
            emit(prefix + (slice(ia, ib),))
        if rb:
            rec(0, rb, dim + 1, prefix + (slice(ib, ib + 1),))

    rec(int(start), int(stop), 0, ())
    return out


def slab_shape(slices) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in slices)


# ---------------------------------------------------------------- summary


class Summary:
    """Running points, feasible count and tok/W range (what ``sweep run`` prints)."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.points = int(state.get("points", 0))
        self.feasible = int(state.get("feasible", 0))
        self.lo = float(state.get("lo", math.inf))
        self.hi = float(state.get("hi", -math.inf))

    def update(self, start, stop, outputs):
        self.points += stop - start
        if "feasible" in outputs:
            ok = np.asarray(outputs["feasible"], dtype=bool)
            self.feasible += int(np.count_nonzero(ok))
        if "tok_per_watt" in outputs:
            tokw = outputs["tok_per_watt"]
            if np.isfinite(tokw).any():
                self.lo = min(self.lo, float(np.nanmin(tokw)))
                self.hi = max(self.hi, float(np.nanmax(tokw)))

    def state(self) -> dict:
        return {"points": self.points, "feasible": self.feasible, "lo": self.lo, "hi": self.hi}

    def merge(self, state: dict) -> None:
        other = Summary(state)
        self.points += other.points
        self.feasible += other.feasible
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)

    def lines(self, spec, seconds: float | None = None) -> list[str]:
        dims = dict(zip(spec.axes, spec.shape, strict=True))
        lines = [f"{spec.name}: {spec.mode} mode, {spec.precision}, dims {dims}"]
        n = self.points
        if seconds:
            lines.append(f"points: {n:,}  seconds: {seconds:.2f}  points/s: {n / seconds:,.0f}")
        else:
            lines.append(f"points: {n:,}")
        lines.append(f"feasible: {self.feasible / max(n, 1):.1%}")
        if self.feasible and self.hi >= self.lo:
            lines.append(f"tok/W (tokens per joule): {self.lo:.4g} .. {self.hi:.4g}")
        return lines


# ---------------------------------------------------------------- the netCDF file


def partial_paths(out) -> tuple[Path, Path]:
    """The partial file and its progress record beside ``out``: .NAME.nc.partial(.json)."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    return partial, partial.with_name(partial.name + ".json")


def create_netcdf(path, spec, dtypes: dict, chunks, extra_attrs: dict, complevel: int = 1):
    """An empty netCDF4 file laid out like ``write_netcdf(assemble(spec, results))``.

    ``dtypes``: output name -> numpy dtype. Data variables get xarray's CF encoding (dtype,
    ``_FillValue``, attributes) and ``chunks`` as their HDF5 chunk shape; coordinates and global
    attributes are written by xarray (first, so that it keeps their attribute order). Returns
    nothing; open the file with ``open_netcdf``.
    """
    import netCDF4
    import xarray as xr

    from sweep.dataset import assemble, encoding

    shape, dims = spec.shape, tuple(spec.axes)
    placeholders = {k: np.broadcast_to(np.zeros((), d), shape) for k, d in dtypes.items()}
    template = assemble(spec, placeholders, extra_attrs)
    enc = encoding(template, complevel)
    variables, global_attrs = xr.conventions.encode_dataset_coordinates(template)
    one = (slice(0, 1),) * len(shape)
    coords = xr.Dataset(coords=template.coords, attrs=template.attrs)
    coords.to_netcdf(path, mode="w", engine="netcdf4", format="NETCDF4")
    with contextlib.closing(netCDF4.Dataset(path, "a")) as nc:
        if "coordinates" in nc.ncattrs() and "coordinates" not in global_attrs:
            nc.delncattr("coordinates")  # coords-only write put them there; data vars hold them
        for name in template.data_vars:
            encoded = xr.conventions.encode_cf_variable(variables[name][one], name=name)
            attrs = dict(encoded.attrs)
            fill = attrs.pop("_FillValue", None)
            opts = enc.get(name, {})
            var = nc.createVariable(
                name,
                encoded.dtype,
                dims,
                zlib=opts.get("zlib", False),
                complevel=opts.get("complevel", 4),
                shuffle=opts.get("shuffle", True),
                chunksizes=tuple(chunks),
                fill_value=fill,
            )
            var.setncatts(attrs)


def open_netcdf(path):
    import netCDF4

    nc = netCDF4.Dataset(path, "a")
    nc.set_auto_maskandscale(False)
    for var in nc.variables.values():
        if var.chunking() != "contiguous":
            var.set_var_chunk_cache(size=0)  # whole chunks are written once: no cache needed
    return nc


def write_slab(nc, slices, outputs: dict) -> None:
    """Write one hyperslab of every output (flat arrays of the slab's size)."""
    shape = slab_shape(slices)
    for name, values in outputs.items():
        var = nc.variables[name]
        var[slices] = np.asarray(values).reshape(shape).astype(var.dtype, copy=False)


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _unlink(*paths) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


class StopRequest:
    """SIGTERM and Ctrl-C ask the streamed loop to stop after the block being written.

    The block is flushed and recorded, then ``KeyboardInterrupt`` is raised at that safe point
    (an exception raised from a signal handler in the middle of JAX's compile or dispatch can
    crash the interpreter). A second signal interrupts at once. Main thread only.
    """

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.signal is not None:
            self._restore()
            raise KeyboardInterrupt(f"signal {signum}")
        self.signal = signum
        import sys

        message = "stopping after the current block (signal again to stop now)"
        print(f"\nsweep: {message}", file=sys.stderr)

    def check(self) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt(f"signal {self.signal}")

    def _restore(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()
        return False


def fingerprint(spec, dtypes) -> dict:
    return {
        "spec": spec.text,
        "precision": spec.precision,
        "dims": list(spec.axes),
        "shape": list(spec.shape),
        "outputs": list(dtypes),
    }


def _writer_alive(record: dict) -> int | None:
    """The pid of the live process that is writing a partial run on this host, if any."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or record.get("host") != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    with contextlib.suppress(OSError):  # a reused pid that is not a sweep
        if b"sweep" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    return pid


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise SpecError("resume", f"progress record {path} is unreadable ({err})") from None
    return record if isinstance(record, dict) else None


def check_resumable(record: dict, spec, dtypes, chunk_size, record_path: Path) -> Blocks:
    """The recorded blocks, after checking that this run is the same sweep."""
    where = f"the partial run ({record_path.name})"
    if record.get("format") != RECORD_FORMAT:
        raise SpecError("resume", f"{where} was written by another version; rerun without --resume")
    mine = fingerprint(spec, dtypes)
    for key, what in (("spec", "spec text"), ("precision", "precision"), ("shape", "grid")):
        if record.get(key) != mine[key]:
            raise SpecError(
                "resume",
                f"the {what} differs from the one {where} was started with; "
                "rerun without --resume to start over",
            )
    if record.get("dims") != mine["dims"] or record.get("outputs") != mine["outputs"]:
        raise SpecError(
            "resume", f"the grid or outputs differ from {where}; rerun without --resume"
        )
    b = record["blocks"]
    blocks = Blocks(tuple(spec.shape), int(b["axis"]), int(b["rows"]), int(b["unit"]))
    if chunk_size and choose_blocks(spec.shape, chunk_size) != blocks:
        raise SpecError(
            "resume",
            f"--chunk-size {chunk_size} gives other blocks than the {blocks.chunk}-point ones "
            f"{where} used; omit --chunk-size (or pass the same) to resume",
        )
    return blocks


# ---------------------------------------------------------------- the streamed run


@dataclass
class StreamResult:
    path: Path
    points: int
    seconds: float  # compute + write time of every session of this sweep
    summary: Summary
    blocks: Blocks
    resumed_from: int  # blocks already done when this session started


def _notice(message: str, quiet: bool) -> None:
    if not quiet:
        import sys

        print(f"sweep: {message}", file=sys.stderr)


def stream_to_netcdf(
    spec,
    path,
    *,
    precision: str | None = None,
    chunk_size: int | None = None,
    memory: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    devices=None,
    complevel: int = 1,
) -> StreamResult:
    """Evaluate a spec block by block into the netCDF4 file ``path`` (see the module doc).

    ``chunk_size`` caps the points per block (default: from ``memory``). With ``resume``, an
    interrupted run of the same spec towards the same ``path`` continues where it stopped.
    Interrupted runs leave ``.NAME.nc.partial`` and its ``.json`` record, never ``path``.
    """
    from sweep.api import outputs_of
    from sweep.engine import iter_chunks
    from sweep.modes import build_problem
    from sweep.spec import load_spec

    spec = load_spec(spec, precision=precision)
    problem = build_problem(spec, outputs=outputs_of(spec))
    dtypes = output_dtypes(problem)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial, record_path = partial_paths(out)
    quiet = progress is False

    try:
        record = read_record(record_path) if partial.is_file() else None
    except SpecError:
        if resume:
            raise
        record = None
    writer = _writer_alive(record) if record else None
    if writer:
        raise SpecError(
            "output", f"another sweep (pid {writer}) is writing {partial}; wait for it or stop it"
        )
    if not resume:
        record = None
    if resume and record is None:
        _notice(f"no partial run of {out} to resume; starting from the beginning", quiet)
    if record is not None:
        blocks = check_resumable(record, spec, dtypes, chunk_size, record_path)
        summary = Summary(record.get("summary"))
        done, seconds = int(record["done"]), float(record.get("seconds", 0.0))
        try:
            nc = open_netcdf(partial)
        except OSError as err:
            raise SpecError(
                "resume",
                f"the partial file {partial} cannot be opened ({err}); it was probably killed in "
                "the middle of a write: rerun without --resume to start over",
            ) from None
        history = nc.getncattr("history") if "history" in nc.ncattrs() else ""
        stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        nc.setncattr("history", f"{history}\n{stamp} resumed at block {done}/{len(blocks)}")
        _notice(f"resuming {out}: {done} of {len(blocks)} blocks were done", quiet)
    else:
        _unlink(partial, record_path)
        chunk = plan(problem, memory, chunk_size, devices).chunk
        blocks = choose_blocks(problem.shape, chunk)
        summary, done, seconds = Summary(), 0, 0.0
        attrs = {"points": problem.size, "chunk_points": blocks.chunk, "compute_seconds": 0.0}
        try:
            create_netcdf(partial, spec, dtypes, blocks.storage_chunks(), attrs, complevel)
            nc = open_netcdf(partial)
        except BaseException:
            _unlink(partial)
            raise
    base = {"format": RECORD_FORMAT, **fingerprint(spec, dtypes), "blocks": blocks.record()}
    base.update(pid=os.getpid(), host=platform.node())
    first = {**base, "done": done, "seconds": seconds, "total": len(blocks)}
    _write_json(record_path, {**first, "summary": summary.state()})

    t0 = time.perf_counter()
    try:
        with StopRequest() as stop_request:
            chunks = iter_chunks(
                problem, blocks.chunk, progress, done, ranges=blocks, devices=devices
            )
            for i, (start, stop, outputs) in enumerate(chunks, start=done):
                write_slab(nc, blocks.slab(i), outputs)
                summary.update(start, stop, outputs)
                nc.sync()
                elapsed = seconds + time.perf_counter() - t0
                record = {**base, "done": i + 1, "seconds": elapsed, "total": len(blocks)}
                _write_json(record_path, {**record, "summary": summary.state()})
                stop_request.check()
        seconds += time.perf_counter() - t0
        nc.setncattr("compute_seconds", round(seconds, 4))
    finally:
        nc.close()
    os.replace(partial, out)
    _unlink(record_path)
    return StreamResult(out, problem.size, seconds, summary, blocks, done)


# ---------------------------------------------------------------- the CLI's routing


@dataclass(frozen=True)
class Route:
    engine: str  # "memory", "stream", "reduce" or "cluster"
    chunk: int | None  # points per chunk (None: the engine picks it from the budget)
    memory: int


def route(spec, args) -> Route:
    """How ``sweep run`` evaluates a spec, from its flags and the memory budget."""
    memory = getattr(args, "memory", None) or default_memory()
    chunk_size = getattr(args, "chunk_size", None)
    reduce, over = getattr(args, "reduce", None), getattr(args, "over", None)
    resume, scheduler = getattr(args, "resume", False), getattr(args, "scheduler", None)
    if getattr(args, "workers", None) and not scheduler:
        raise SpecError("workers", "--workers sizes the local cluster of --scheduler local")
    if over and "extrema" not in (reduce or ()):
        raise SpecError("over", "--over applies to --reduce extrema")
    if reduce:
        if resume or scheduler:
            raise SpecError("reduce", "--reduce runs in this process, without --resume")
        return Route("reduce", chunk_size, memory)
    if scheduler:
        if resume:
            raise SpecError("resume", "cluster runs (--scheduler) do not resume")
        return Route("cluster", chunk_size, memory)
    from sweep.api import outputs_of
    from sweep.modes import build_problem

    decision = plan(build_problem(spec, outputs=outputs_of(spec)), memory, chunk_size)
    if resume:  # the chunk comes from the partial run's record (an explicit one must match)
        return Route("stream", chunk_size, memory)
    return Route("stream" if decision.stream else "memory", decision.chunk, memory)


def run_routed(route: Route, spec, out: Path, args, progress) -> int:
    """``sweep run`` for the streamed, reduced and cluster engines; prints like ``cmd_run``."""
    import sys

    t0 = time.perf_counter()
    kw = {"chunk_size": route.chunk, "memory": route.memory, "progress": progress}
    if route.engine == "reduce":
        from sweep.reduce import reduce_to_files

        print("\n".join(reduce_to_files(spec, args.reduce, out, over=args.over, **kw)))
        return 0
    if route.engine == "cluster":
        from sweep.cluster import run_cluster

        base = Path(args.spec).resolve().parent
        result = run_cluster(
            spec, out, scheduler=args.scheduler, workers=args.workers, base=base, **kw
        )
    else:
        try:
            result = stream_to_netcdf(spec, out, resume=args.resume, **kw)
        except KeyboardInterrupt:
            partial = partial_paths(out)[0]
            if partial.is_file():
                print(f"sweep: progress kept in {partial}; continue with --resume", file=sys.stderr)
            raise
    seconds = time.perf_counter() - t0
    if result.resumed_from:  # the rate is over every session's compute-and-write time
        seconds = result.seconds
    print("\n".join(result.summary.lines(spec, seconds)))
    if result.resumed_from:
        print(f"resumed: {result.resumed_from} of {len(result.blocks)} blocks were done before")
    print(f"wrote {out}")
    if getattr(args, "plot", False):
        print("sweep: --plot skipped: the result was streamed; plot a slice", file=sys.stderr)
    return 0
