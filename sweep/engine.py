"""The generic sweep engine: one point function mapped over a Cartesian grid.

A ``Problem`` is a grid (axes, each with a coordinate and the point-function inputs it
indexes), scalar inputs shared by every point, and a pure per-point function. The engine
never materialises the Cartesian product: each fixed-shape chunk (a flat index range from an
``offset``) is one jitted function that builds its points' inputs from the small per-axis
tables and evaluates ``vmap(point_fn)``. Every chunk has the same shape (the last one is
padded by repeating the last valid point, which is safe to evaluate), so one compilation
serves the whole grid.

Inside a chunk, points are evaluated in cache-sized tiles, one after another (``lax.map``):
- broadcast tiles (the usual case): a tile is one index of the leading axes times all of the
  trailing axes ``shape[k:]`` (at most ``TILE_POINTS``); the trailing axes' inputs are their
  tables broadcast, the leading axes' one gather per tile, and the chunk's points are sliced
  out of the tiles that cover it;
- gather tiles (trailing axes too small or too long, or a chunk smaller than one tile):
  ``offset + iota`` flat indices are unravelled and every input gathered.
Both give the same values, bit for bit (tested: chunk sizes, shards, resumed runs). On the
1e6-point ``grids/million.toml`` (2 CPU cores), broadcast tiles ran at 3.4e7 points/s in
float32, gathering every input at 1e7, one untiled call at 3.5e6.

With several local JAX devices (GPUs, or CPU devices forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``), each chunk is sharded over a 1-D mesh
``("points",)``: it is padded to a multiple of the device count and every device generates and
evaluates its own contiguous slice of the chunk (``jax.shard_map``), so the results are the
same, bit for bit, as on one device; with one device the code path is the plain ``jit``.
``iter_chunks`` dispatches the next chunk before handing the current one to its consumer
(JAX dispatch is asynchronous), so computing chunk i + 1 overlaps with writing chunk i.

Nothing here knows the physics: the roofline, calibrated, gradient and fleet modes are all
point functions (see ``sweep.modes``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_CHUNK_POINTS = 1 << 20
TILE_POINTS = 1 << 16  # points evaluated at once inside a chunk (see make_chunk_fn)
MIN_TILE_POINTS = 1 << 10  # smallest broadcast tile worth its per-tile overhead


@dataclass(frozen=True)
class Axis:
    """One grid dimension: its coordinate values and the inputs each value carries."""

    name: str
    coord: np.ndarray
    fields: Mapping[str, np.ndarray]  # input name -> array of len(coord)

    def __len__(self) -> int:
        return len(self.coord)


@dataclass(frozen=True)
class Problem:
    axes: tuple[Axis, ...]
    constants: Mapping[str, float]  # inputs shared by every point
    point_fn: Callable[[dict], dict]  # one point's inputs -> its outputs (scalars)
    dtype: np.dtype
    outputs: tuple[str, ...] = field(default=())  # which outputs to keep (all when empty)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)


def chunk_points(problem: Problem, chunk_size: int | None) -> int:
    """Points per chunk: the whole grid when it fits, else ``chunk_size``."""
    chunk_size = chunk_size or DEFAULT_CHUNK_POINTS
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    return max(1, min(problem.size, chunk_size))


def _tables(problem: Problem):
    """Per-axis input tables and the shared constants, as arrays of the problem's dtype."""
    tables = tuple(
        {k: jnp.asarray(np.asarray(v, dtype=problem.dtype)) for k, v in a.fields.items()}
        for a in problem.axes
    )
    constants = {k: jnp.asarray(v, dtype=problem.dtype) for k, v in problem.constants.items()}
    return tables, constants


def gather_inputs(problem: Problem, tables, constants, flat_index):
    """Inputs of the points at ``flat_index`` (a 1-D integer array), by gathers from tables."""
    shape = problem.shape
    indices = jnp.unravel_index(flat_index, shape) if shape else ()
    inputs = {}
    for table, idx in zip(tables, indices, strict=True):
        for k, v in table.items():
            inputs[k] = v[idx]
    n = flat_index.shape[0]
    for k, v in constants.items():
        inputs[k] = jnp.broadcast_to(v, (n,))
    return inputs


def broadcast_split(shape) -> int | None:
    """First axis of the trailing block that makes one broadcast tile, or None.

    A tile spans whole trailing axes ``shape[k:]`` (k smallest with at most TILE_POINTS
    points): their inputs are the per-axis tables broadcast, not gathered, and the leading axes'
    inputs are one gather per tile. None when such a tile would hold fewer than
    MIN_TILE_POINTS points (tiny trailing axes under a long one): then points are gathered.
    """
    k = next(j for j in range(len(shape) + 1) if math.prod(shape[j:]) <= TILE_POINTS)
    return k if k < len(shape) and math.prod(shape[k:]) >= MIN_TILE_POINTS else None


def broadcast_inputs(problem: Problem, tables, constants, split: int, tile_index):
    """Inputs of every point of one tile: ``tile_index`` over ``shape[:split]``, all of the rest."""
    lead, trail = problem.shape[:split], problem.shape[split:]
    size = math.prod(trail)
    indices = jnp.unravel_index(tile_index, lead) if lead else ()
    inputs = {}
    # a field may carry an array per axis value (e.g. a workload's CDF breakpoints): its
    # trailing dimensions ride along
    for table, i in zip(tables[:split], indices, strict=True):
        for k, v in table.items():
            inputs[k] = jnp.broadcast_to(v[i], (size, *v.shape[1:]))
    for j, table in enumerate(tables[split:]):
        shape = [1] * len(trail)
        shape[j] = trail[j]
        for k, v in table.items():
            rest = v.shape[1:]
            wide = jnp.broadcast_to(v.reshape(*shape, *rest), (*trail, *rest))
            inputs[k] = wide.reshape(size, *rest)
    for k, v in constants.items():
        inputs[k] = jnp.broadcast_to(v, (size,))
    return inputs


def index_dtype_for(n: int):
    """int32 flat indices where they suffice (unravel_index on int64 measured 2x slower)."""
    return jnp.int32 if n < 2**31 else jnp.int64


def chunk_devices(devices=None) -> list:
    """The devices a chunk is sharded over: ``devices``, else every local JAX device."""
    return list(jax.local_devices() if devices is None else devices)


def make_chunk_fn(problem: Problem, chunk: int, devices=None):
    """jit(offset -> outputs of the ``chunk`` points from ``offset``), compiled once.

    With more than one device in ``devices`` (default: all local devices) the chunk is padded
    to a multiple of the device count and sharded over them (``NamedSharding`` over a 1-D
    ``("points",)`` mesh); the outputs are then at least ``chunk`` long (padding repeats the
    last point of the grid, like the padding of the last chunk).
    """
    tables, constants = _tables(problem)
    last = problem.size - 1
    keep = problem.outputs
    devices = chunk_devices(devices)

    split = broadcast_split(problem.shape)

    def evaluate_inputs(inputs):
        out = jax.vmap(problem.point_fn)(inputs)
        return {k: v for k, v in out.items() if not keep or k in keep}

    def gather_tile(flat):
        inputs = gather_inputs(problem, tables, constants, flat)
        # Materialise the gathered inputs once: fused into every output's loop, XLA recomputes
        # the index arithmetic and gathers per output (measured 2.5x slower at 1e6 points).
        return evaluate_inputs(jax.lax.optimization_barrier(inputs))

    def broadcast_tile(t):
        return evaluate_inputs(broadcast_inputs(problem, tables, constants, split, t))

    def points(first, n: int):
        """Outputs of the ``n`` points from flat index ``first`` (clamped to the grid)."""
        if split is not None and n >= (tile := math.prod(problem.shape[split:])):
            # whole tiles over the trailing axes, no gathers; slice the n points out of them
            t0 = first // tile
            count = -(-n // tile) + 1
            last_tile = math.prod(problem.shape[:split]) - 1
            t = jnp.minimum(t0 + jnp.arange(count, dtype=first.dtype), last_tile)
            out = jax.lax.map(broadcast_tile, t)
            offset = first - t0 * tile
            return {
                k: jax.lax.dynamic_slice_in_dim(v.reshape(-1), offset, n) for k, v in out.items()
            }
        flat = jnp.minimum(first + jnp.arange(n, dtype=first.dtype), last)
        # Cache-sized tiles, one after another (lax.map): the gathered inputs and temporaries
        # of a tile stay in cache (measured 2-6x faster than one 1e6-point tile on CPU).
        if n <= TILE_POINTS:
            return gather_tile(flat)
        tiles = -(-n // TILE_POINTS)
        padded = jnp.concatenate([flat, jnp.full(tiles * TILE_POINTS - n, last, flat.dtype)])
        out = jax.lax.map(gather_tile, padded.reshape(tiles, TILE_POINTS))
        return {k: v.reshape(-1)[:n] for k, v in out.items()}

    if len(devices) == 1:
        return jax.jit(lambda offset: points(offset, chunk))

    n = len(devices)
    local = -(-chunk // n)  # points per device
    mesh = jax.make_mesh((n,), ("points",), devices=devices)

    def run_local(offset):
        return points(offset + jax.lax.axis_index("points").astype(offset.dtype) * local, local)

    sharded = jax.shard_map(run_local, mesh=mesh, in_specs=jax.P(), out_specs=jax.P("points"))
    return jax.jit(sharded, out_shardings=jax.NamedSharding(mesh, jax.P("points")))


def iter_chunks(
    problem: Problem,
    chunk_size: int | None = None,
    progress: bool | None = None,
    start_chunk: int = 0,
    *,
    ranges: Sequence[tuple[int, int]] | None = None,
    devices=None,
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Yield (start, stop, outputs) per chunk, outputs as host arrays of length stop - start.

    ``progress`` shows a bar on stderr when there are several chunks (None: only on a TTY).
    ``ranges``: the flat (start, stop) ranges to evaluate, in increasing order, each at most
    ``chunk_size`` long (default: consecutive chunks of ``chunk_points`` covering the grid);
    ``start_chunk`` skips the first ones (resuming). ``devices``: see ``make_chunk_fn``.
    """
    if ranges is None:
        chunk = chunk_points(problem, chunk_size)
        ranges = _UniformRanges(problem.size, chunk)
    else:
        chunk = chunk_points(problem, chunk_size or max((b - a for a, b in ranges), default=1))
    n_chunks = len(ranges)
    fn = make_chunk_fn(problem, chunk, devices)
    index_dtype = index_dtype_for(problem.size + chunk)
    bar = None
    if n_chunks > 1 and progress is not False:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=problem.size,
            initial=ranges[start_chunk][0] if start_chunk < n_chunks else problem.size,
            unit="pt",
            unit_scale=True,
            disable=None if progress is None else False,
            leave=False,
        )

    def dispatch(i):
        start, stop = ranges[i]
        if not 0 < stop - start <= chunk:
            raise ValueError(f"range {ranges[i]} is empty or longer than the chunk ({chunk})")
        return start, stop, fn(jnp.asarray(start, dtype=index_dtype))

    try:
        pending = dispatch(start_chunk) if start_chunk < n_chunks else None
        for i in range(start_chunk, n_chunks):
            start, stop, out = pending
            # asynchronous dispatch: chunk i + 1 computes while the caller consumes chunk i
            pending = dispatch(i + 1) if i + 1 < n_chunks else None
            host = {k: np.asarray(v)[: stop - start] for k, v in out.items()}
            del out
            if bar is not None:
                bar.update(stop - start)
            yield start, stop, host
    finally:
        if bar is not None:
            bar.close()


class _UniformRanges:
    """(i * chunk, min((i + 1) * chunk, size)) for i < ceil(size / chunk), as a sequence."""

    def __init__(self, size: int, chunk: int):
        self.size, self.chunk = size, chunk

    def __len__(self) -> int:
        return math.ceil(self.size / self.chunk)

    def __getitem__(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return i * self.chunk, min((i + 1) * self.chunk, self.size)


def evaluate(
    problem: Problem,
    chunk_size: int | None = None,
    progress: bool | None = None,
    *,
    devices=None,
):
    """Every kept output over the whole grid, as numpy arrays of the grid's shape."""
    results: dict[str, np.ndarray] = {}
    for start, stop, out in iter_chunks(problem, chunk_size, progress, devices=devices):
        for k, v in out.items():
            if k not in results:
                results[k] = np.empty(problem.size, dtype=v.dtype)
            results[k][start:stop] = v
    return {k: v.reshape(problem.shape) for k, v in results.items()}


def evaluate_timed(problem: Problem, chunk_size: int | None = None, progress=None, **kwargs):
    """``evaluate``, and the run's attributes for its dataset: points, chunk_points and
    compute_seconds."""
    t0 = time.perf_counter()
    results = evaluate(problem, chunk_size=chunk_size, progress=progress, **kwargs)
    return results, {
        "points": problem.size,
        "chunk_points": chunk_points(problem, chunk_size),
        "compute_seconds": round(time.perf_counter() - t0, 4),
    }
