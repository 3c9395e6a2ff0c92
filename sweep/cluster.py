"""The cluster engine: blocks of a sweep as ``dask.distributed`` tasks writing one zarr store.

``sweep run SPEC --scheduler ADDRESS`` (or ``--scheduler local`` for a ``LocalCluster`` of
``--workers`` processes on this machine) cuts the grid into the same hyperslab blocks as the
out-of-core engine (``sweep.stream.Blocks``). Each task gets the spec *text* and a block
index, never a JAX function (they do not pickle): the worker rebuilds the Problem from the
text once (cached per worker process), evaluates its block with the engine's fixed-shape chunk
function (sharded over the worker's local devices) and writes the block into the zarr arrays
of one store, ``.NAME.nc.zarr.partial`` beside the output. The zarr chunks are the blocks'
storage chunks, so no two tasks ever write the same zarr chunk. When every task is done, the
driver copies the store block by block into a netCDF4 file laid out exactly like the
single-process streamed one (``sweep.stream.create_netcdf``) and renames it onto the output
(atomic); the store is then removed. The data are identical to a single-process run: the same
compiled chunk evaluates the same points. An interrupted or failed cluster run removes its
store and leaves nothing at the output path (cluster runs do not ``--resume``).

The memory budget (``--memory``) applies per worker: it sizes the blocks, and each worker
holds one block at a time (use one thread per worker).

Multi-host recipe
-----------------
1. Install the same environment on every host: ``pip install -e '.[cluster]'`` (add
   ``cuda`` on GPU hosts: ``pip install -e '.[cluster,cuda]'``), with the same catalogs and
   any model ``config.json`` files at the same paths.
2. Put the output folder on a filesystem every host sees at the same path (NFS, Lustre, ...):
   workers write the zarr store beside the output, the driver reads it back.
3. Start a scheduler and the workers::

       dask scheduler                                   # on the head node, port 8786
       # on every host, one worker per GPU, one thread each:
       CUDA_VISIBLE_DEVICES=0 XLA_PYTHON_CLIENT_PREALLOCATE=false \\
           dask worker tcp://HEAD:8786 --nworkers 1 --nthreads 1
       # (repeat with CUDA_VISIBLE_DEVICES=1, 2, ...; CPU hosts: --nworkers <cores/2>)

4. Run from any host that sees the folder::

       sweep run grids/million.toml --scheduler tcp://HEAD:8786 -o /shared/out/million.nc

   A worker that sees several GPUs shards each block over all of them instead (one worker
   per host, ``jax.sharding`` over a 1-D mesh of its local devices, see ``sweep.engine``).

Alternative without dask, on a multi-GPU cluster managed by SLURM or similar:
``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` in every
process before any other JAX call makes ``jax.devices()`` span the hosts, but the engine only
shards over ``jax.local_devices()``; the multi-process pattern is then: every process
evaluates the blocks ``i`` with ``i % num_processes == process_id`` with ``run_block`` into the
shared store, then process 0 calls ``convert_store``. This route is not wired to the CLI and
is untested here; the dask route above is the one that is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from sweep.errors import SpecError
from sweep.stream import (
    Blocks,
    StreamResult,
    Summary,
    choose_blocks,
    create_netcdf,
    open_netcdf,
    output_dtypes,
    partial_paths,
    plan,
    slab_shape,
    write_slab,
)

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def store_path(out) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.zarr.partial")


@contextlib.contextmanager
def _cwd(path):
    """Load a spec text with relative ``config`` paths from the folder the spec was in."""
    if path is None or Path(path) == Path.cwd():
        yield
        return
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _problem(job: dict):
    """(problem, chunk function, blocks) of a job, built once per worker process."""
    key = (job["spec"], job["precision"], job["base"], tuple(job["blocks"].items()))
    with _CACHE_LOCK:
        if key not in _CACHE:
            from sweep.api import outputs_of
            from sweep.engine import make_chunk_fn
            from sweep.modes import build_problem
            from sweep.spec import load_spec

            with _cwd(job["base"]):
                spec = load_spec(job["spec"], precision=job["precision"])
            problem = build_problem(spec, outputs=outputs_of(spec))
            b = job["blocks"]
            blocks = Blocks(tuple(problem.shape), b["axis"], b["rows"], b["unit"])
            _CACHE.clear()  # one sweep at a time per worker
            _CACHE[key] = (problem, make_chunk_fn(problem, blocks.chunk), blocks)
        return _CACHE[key]


def run_block(i: int, job: dict) -> tuple[int, dict]:
    """Evaluate block ``i`` of a job and write it into the job's zarr store (a task)."""
    import zarr

    from sweep.engine import index_dtype_for

    problem, fn, blocks = _problem(job)
    start, stop = blocks[i]
    index = index_dtype_for(problem.size + blocks.chunk)
    out = {k: np.asarray(v)[: stop - start] for k, v in fn(index(start)).items()}
    slab = blocks.slab(i)
    shape = slab_shape(slab)
    for name, values in out.items():
        array = zarr.open_array(store=job["store"], path=name, mode="r+")
        array[slab] = values.reshape(shape)
    summary = Summary()
    summary.update(start, stop, out)
    return i, summary.state()


def create_store(path: Path, shape, dtypes: dict, chunks) -> None:
    import zarr

    shutil.rmtree(path, ignore_errors=True)
    for name, dtype in dtypes.items():
        fill = np.nan if dtype.kind == "f" else dtype.type(0)
        zarr.open_array(
            store=str(path),
            path=name,
            mode="w",
            shape=tuple(shape),
            chunks=tuple(chunks),
            dtype=dtype,
            fill_value=fill,
        )


def convert_store(store: Path, spec, dtypes: dict, blocks: Blocks, out: Path, attrs: dict):
    """Copy the zarr store block by block into the netCDF4 file ``out`` (atomic)."""
    import zarr

    partial, _ = partial_paths(out)
    try:
        create_netcdf(partial, spec, dtypes, blocks.storage_chunks(), attrs)
        nc = open_netcdf(partial)
        try:
            arrays = {k: zarr.open_array(store=str(store), path=k, mode="r") for k in dtypes}
            for i in range(len(blocks)):
                slab = blocks.slab(i)
                write_slab(nc, slab, {k: a[slab] for k, a in arrays.items()})
            nc.setncattr("compute_seconds", attrs["compute_seconds"])
        finally:
            nc.close()
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def _client(scheduler: str, workers: int | None):
    """(client, cluster or None) for an address or "local"."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SpecError(
            "scheduler", "the cluster engine needs dask.distributed: pip install -e '.[cluster]'"
        ) from None
    if scheduler == "local":
        n = workers or max(1, min(os.cpu_count() or 1, 4))
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        )
        return Client(cluster), cluster
    if workers:
        raise SpecError("workers", "--workers sizes a local cluster (--scheduler local) only")
    try:
        return Client(scheduler, timeout="30s"), None
    except (OSError, TimeoutError, ValueError) as err:
        raise SpecError("scheduler", f"cannot reach {scheduler!r}: {err}") from None


def run_cluster(
    spec,
    path,
    *,
    scheduler: str = "local",
    workers: int | None = None,
    client=None,
    precision: str | None = None,
    chunk_size: int | None = None,
    memory: int | None = None,
    progress: bool | None = None,
    base=None,
) -> StreamResult:
    """Evaluate a spec as dask tasks into the netCDF4 file ``path`` (see the module doc).

    ``client``: an existing ``distributed.Client`` (else one is made from ``scheduler``).
    ``base``: the folder relative model ``config`` paths of the spec are read from (default:
    the spec file's folder when ``spec`` is a path, else the current folder).
    """
    from sweep.api import outputs_of
    from sweep.modes import build_problem
    from sweep.spec import load_spec

    if base is None and isinstance(spec, str | Path) and Path(spec).is_file():
        base = Path(spec).resolve().parent
    spec = load_spec(spec, precision=precision)
    problem = build_problem(spec, outputs=outputs_of(spec))
    dtypes = output_dtypes(problem)
    blocks = choose_blocks(problem.shape, plan(problem, memory, chunk_size).chunk)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = store_path(out.resolve())  # absolute: workers run in other folders (and hosts)
    job = {
        "spec": spec.text,
        "precision": spec.precision,
        "base": str(Path(base).resolve()) if base else os.getcwd(),
        "store": str(store),
        "blocks": {"axis": blocks.axis, "rows": blocks.rows, "unit": blocks.unit},
    }
    own = client is None
    cluster = None
    summary = Summary()
    bar = None
    futures = []
    t0 = time.perf_counter()
    try:
        create_store(store, problem.shape, dtypes, blocks.storage_chunks())
        if own:
            client, cluster = _client(scheduler, workers)
        from distributed import as_completed

        futures = client.map(run_block, range(len(blocks)), job=job, pure=False)
        if progress is not False and len(blocks) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=problem.size,
                unit="pt",
                unit_scale=True,
                disable=None if progress is None else False,
                leave=False,
            )
        for future in as_completed(futures):
            i, state = future.result()
            summary.merge(state)
            if bar is not None:
                start, stop = blocks[i]
                bar.update(stop - start)
        seconds = time.perf_counter() - t0
        attrs = {
            "points": problem.size,
            "chunk_points": blocks.chunk,
            "compute_seconds": round(seconds, 4),
        }
        convert_store(store, spec, dtypes, blocks, out, attrs)
    except BaseException:
        if futures:
            client.cancel(futures)  # an external scheduler would keep running them
        raise
    finally:
        if bar is not None:
            bar.close()
        if own and client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(store, ignore_errors=True)
    return StreamResult(out, problem.size, time.perf_counter() - t0, summary, blocks, 0)
