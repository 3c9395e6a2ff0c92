"""Throughput of the sweep engine against numpy and a pure-Python per-point loop.

    python benchmarks/bench.py [--sizes 1e4,1e5,1e6,1e7,1e8] [--precisions float32,float64]
                               [--out outputs/bench] [--quick]

writes ``OUT/bench.json`` (after every size, so an interrupted run keeps what it measured) and
``OUT/bench.png`` (points/s against grid size, log-log, one line per engine x precision).

For each grid size and precision, on a roofline grid derived from the catalog (every GPU x
every model x tp 1/2/4/8 x bf16/fp8/fp4, with the context and batch axes scaled to the size):

kernel     the engine's jitted chunk function (``sweep.engine.make_chunk_fn``: flat indices ->
           gathers from the per-axis tables -> ``vmap`` of the roofline point function -> the
           twelve dataset outputs), left on the device. The first call (trace + compile + run)
           is timed apart from the median of repeated calls, each ``block_until_ready``. Up to
           ``--whole-max`` points it is one call over the whole grid; above, a host loop over
           fixed-shape chunks of ``--kernel-chunk`` points (one compilation), as the engine does.
sweep_run  ``sweep.run(spec)`` end to end, spec dict -> xarray Dataset (validation, a fresh
           compilation, every chunk, the device-to-host copies, assembly). Skipped above
           ``--e2e-max`` points, where the host copy of the outputs alone would not fit
           comfortably; the JSON says so.
cli        at ``--cli-sizes`` (1e6 and 1e7 by default), the ``sweep run SPEC -o FILE.nc``
           command in a subprocess: start-up, import, compile, compute and the compressed
           netCDF4 write; also the in-process ``write_netcdf`` time of the sweep_run dataset.
numpy      ``benchmarks/numpy_model.py`` on the same points in the same process: the same
           gathers and formulas, one chunk of up to 2**20 points at a time; above
           ``--numpy-max`` points, evenly spread whole chunks of the grid (a subsample).
python     ``tests/reference_model.py`` (plain Python, one point at a time, as the seed paper's
           framework computes) on ``--python-points`` random points of the grid, timed and
           extrapolated to points/s; precision-independent (Python floats are float64).

Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the process's peak resident set so
far; sizes run in ascending order, so its growth belongs to the size that caused it. JAX
buffers live outside Python's allocator, so tracemalloc would not see them; on a GPU the
device's own ``memory_stats()`` peak is recorded as well.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sweep  # noqa: E402, F401  (enables float64 before any JAX computation)
from benchmarks import numpy_model  # noqa: E402
from kernels.model import MODEL_FIELDS  # noqa: E402
from sweep import catalog  # noqa: E402
from sweep.api import outputs_of  # noqa: E402
from sweep.engine import DEFAULT_CHUNK_POINTS, index_dtype_for, make_chunk_fn  # noqa: E402
from sweep.modes import FLOPS_KEYS, build_problem  # noqa: E402
from sweep.spec import load_spec  # noqa: E402
from tests import reference_model  # noqa: E402

SCHEMA = "oneoverw-bench/1"
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARK = "ONEOVERW_BENCH_OPENBLAS_UNSET"
TP = [1, 2, 4, 8]
DTYPES = ["bf16", "fp8", "fp4"]
BATCHES = ["saturated", 1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
CONTEXT_RANGE = (1024, 131072)
NUMPY_CHUNK = 1 << 20
CHECK_POINTS = 1 << 16

# Keys every bench.json carries (benchmarks/README.md documents them; tests check them).
TOP_KEYS = ("schema", "created", "command", "settings", "machine", "software", "blas", "notes")
RESULT_KEYS = (
    "size",
    "points",
    "precision",
    "dims",
    "shape",
    "kernel",
    "sweep_run",
    "cli",
    "numpy",
    "python",
    "check",
    "ratios",
    "memory",
)
KERNEL_KEYS = (
    "mode",
    "chunk_points",
    "chunks",
    "first_call_s",
    "steady_median_s",
    "compile_s",
    "lower_s",
    "xla_compile_s",
    "repeats",
    "points_per_s",
    "bytes_written_per_point",
    "write_bound_points_per_s",
    "fraction_of_write_bound",
)


# ---------------------------------------------------------------------------------------------
# grids


def parse_size(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a grid size >= 1")
    return int(round(value))


def size_list(text: str) -> list[int]:
    return [parse_size(t) for t in text.split(",") if t.strip()]


def _contexts(n: int) -> list[int]:
    lo, hi = CONTEXT_RANGE
    values = np.rint(np.geomspace(lo, hi, n)).astype(int) if n > 1 else np.array([8192])
    if len(set(values.tolist())) == n:
        return values.tolist()
    values = np.rint(np.linspace(lo, max(hi, lo + n - 1), n)).astype(int)
    return values.tolist()


def roofline_spec(target: int, precision: str = "float32") -> dict:
    """A realistic roofline spec of about ``target`` points.

    Every catalog GPU x model, tp 1/2/4/8, bf16/fp8/fp4 (1,188 combinations with the shipped
    catalog), then batches (saturated, 1 .. 2048) and log-spaced contexts 1K-128K (linear
    spacing once log spacing would repeat an integer) scaled so that the product is close to
    ``target``. Below one block of combinations, the GPU, model, tp and dtype lists shrink.
    """
    lists = {
        "gpu": list(catalog.load_gpus()),
        "model": list(catalog.load_models()),
        "tp": list(TP),
        "dtype": list(DTYPES),
    }
    while math.prod(len(v) for v in lists.values()) > max(target, 1):
        longest = max(lists, key=lambda k: len(lists[k]))
        if len(lists[longest]) == 1:
            break
        lists[longest] = lists[longest][: len(lists[longest]) // 2 or 1]
    block = math.prod(len(v) for v in lists.values())
    per = max(target / block, 1.0)
    n_batch = int(min(len(BATCHES), max(1, round(math.sqrt(per)))))
    n_ctx = int(max(1, round(per / n_batch)))
    return {
        "name": f"bench-{target:.0e}".replace("+", ""),
        "description": "benchmark grid derived from the catalog (benchmarks/bench.py)",
        "mode": "roofline",
        "precision": precision,
        "axes": {
            "context": _contexts(n_ctx),
            "gpu": lists["gpu"],
            "model": lists["model"],
            "tp": lists["tp"],
            "dtype": lists["dtype"],
            "batch": BATCHES[:n_batch],
        },
    }


# ---------------------------------------------------------------------------------------------
# environment


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def device_peak_mb() -> float | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        return None
    if not stats:
        return None
    peak = stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))
    return None if peak is None else round(peak / 2**20, 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    device = jax.devices()[0]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "backend": jax.default_backend(),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "memory_total_gb": _mem_total_gb(),
        "platform": platform.platform(),
    }


def _mem_total_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 1e9, 1)


def software_info() -> dict:
    import xarray

    out = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", ""),
        "numpy": np.__version__,
        "xarray": xarray.__version__,
    }
    try:
        import netCDF4

        out["netCDF4"] = netCDF4.__version__
    except ImportError:
        out["netCDF4"] = None
    out.update(source_state())
    return out


def source_state() -> dict:
    """The commit, the uncommitted engine/kernel files, and hashes of the code being timed."""
    import hashlib

    def git(*args):
        try:
            proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        except OSError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--", "kernels", "sweep", "benchmarks")
    hashes = {}
    for path in sorted([*ROOT.glob("kernels/*.py"), ROOT / "sweep" / "engine.py"]):
        hashes[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_uncommitted": status.splitlines() if status else [],
        "sha256_12": hashes,
    }


def blas_info(original_env: dict) -> dict:
    """The OpenBLAS variables as the command found them and as it ran, and which kernel ran."""
    info = {
        "env_at_start": original_env,
        "env_during_run": {k: os.environ.get(k) for k in OPENBLAS_VARS},
        "unset_for_this_run": os.environ.get(REEXEC_MARK) == "1",
        "note": (
            "every formula is elementwise (no matrix products), so the BLAS library numpy "
            "links plays no part in these timings; recorded as the env README asks"
        ),
    }
    try:
        import threadpoolctl

        info["threadpoolctl"] = [
            {k: v for k, v in pool.items() if k != "filepath"}
            for pool in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        info["threadpoolctl"] = "not installed"
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas_build"] = {k: deps.get(k) for k in ("name", "version")}
    except Exception:  # noqa: BLE001 - numpy < 1.26 has no dict mode
        info["numpy_blas_build"] = None
    return info


def host_copy_bandwidth(nbytes: int = 1 << 28) -> float:
    """Bytes/s of a large numpy copy, counting bytes read plus bytes written (best of 3).

    Measured in a subprocess, so that its buffers stay out of this process's peak RSS.
    """
    code = (
        "import time, numpy as np\n"
        f"src = np.ones({nbytes // 8}); dst = np.empty_like(src); best = 1e9\n"
        "for _ in range(3):\n"
        "    t0 = time.perf_counter(); np.copyto(dst, src)\n"
        "    best = min(best, time.perf_counter() - t0)\n"
        "print(2 * src.nbytes / best)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(proc.stdout.strip()) if proc.returncode == 0 else None


def reexec_without_openblas_overrides() -> None:
    """Re-run this command with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, if either is set.

    They are read once, when numpy loads OpenBLAS, and slow a current numpy (env README):
    the numpy baseline runs without them; tests and CI keep them. The values found are
    passed on in ONEOVERW_BENCH_OPENBLAS_AT_START and recorded in bench.json.
    """
    found = {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ}
    if not found or os.environ.get(REEXEC_MARK) == "1":
        return
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    env[REEXEC_MARK] = "1"
    env["ONEOVERW_BENCH_OPENBLAS_AT_START"] = json.dumps(found)
    print(f"bench: re-running with {', '.join(found)} unset (numpy baseline)", file=sys.stderr)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def openblas_env_at_start() -> dict:
    if os.environ.get(REEXEC_MARK) == "1":
        found = json.loads(os.environ.get("ONEOVERW_BENCH_OPENBLAS_AT_START", "{}"))
    else:
        found = {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ}
    return {k: found.get(k) for k in OPENBLAS_VARS}


# ---------------------------------------------------------------------------------------------
# timing helpers


def _block(tree):
    return jax.block_until_ready(tree)


def repeat_timing(fn, min_repeats: int, target_s: float, max_repeats: int = 50) -> list[float]:
    """Times of calls of ``fn`` until ``min_repeats`` and ``target_s`` seconds are both reached."""
    times: list[float] = []
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_repeats and sum(times) >= target_s:
            break
    return times


def index_dtype(problem, chunk: int):
    """The flat-index dtype the engine itself uses for this grid (sweep.engine.iter_chunks)."""
    return index_dtype_for(problem.size + chunk)


# ---------------------------------------------------------------------------------------------
# the engines


def time_kernel(problem, whole: bool, kernel_chunk: int, target_s: float, mem_bw):
    """The engine's jitted chunk function alone: compile apart from steady state.

    Returns (figures, the first 65,536 points' outputs as host arrays, for the checks).
    """
    size = problem.size
    chunk = size if whole else min(kernel_chunk, size)
    n_chunks = math.ceil(size / chunk)
    offsets = [jnp.asarray(i * chunk, dtype=index_dtype(problem, chunk)) for i in range(n_chunks)]

    # AOT breakdown of the compilation (a separate jit object, so the timed calls below
    # still pay their own first-call compilation).
    t0 = time.perf_counter()
    lowered = make_chunk_fn(problem, chunk).lower(offsets[0])
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lowered.compile()
    xla_compile_s = time.perf_counter() - t0
    del lowered

    fn = make_chunk_fn(problem, chunk)
    t0 = time.perf_counter()
    first = _block(fn(offsets[0]))
    first_call_s = time.perf_counter() - t0
    bytes_per_point = int(sum(np.dtype(v.dtype).itemsize for v in first.values()))
    sample = {k: np.asarray(v[: min(CHECK_POINTS, size)]) for k, v in first.items()}
    del first

    def one_pass():
        for off in offsets:
            _block(fn(off))

    def one_chunk():
        _block(fn(offsets[0]))

    if whole:
        times = repeat_timing(one_chunk, 3, target_s)
        steady = float(np.median(times))
        # first_call_s ran the computation once as well as compiling it
        compile_s = first_call_s - steady
    else:
        chunk_times = repeat_timing(one_chunk, 3, min(target_s, 1.0))
        chunk_steady = float(np.median(chunk_times))
        compile_s = first_call_s - chunk_steady
        times = repeat_timing(one_pass, 2, target_s, max_repeats=5)
        steady = float(np.median(times))
    pts = size / steady
    out = {
        "mode": "whole grid, one call" if whole else "fixed-shape chunks, host loop",
        "chunk_points": chunk,
        "chunks": n_chunks,
        "index_dtype": str(np.dtype(index_dtype(problem, chunk))),
        "first_call_s": round(first_call_s, 6),
        "steady_median_s": round(steady, 6),
        "compile_s": round(max(compile_s, 0.0), 6),
        "lower_s": round(lower_s, 6),
        "xla_compile_s": round(xla_compile_s, 6),
        "repeats": len(times),
        "points_per_s": pts,
        "bytes_written_per_point": bytes_per_point,
        "write_bound_points_per_s": None,
        "fraction_of_write_bound": None,
    }
    if not whole:
        out["chunk_steady_median_s"] = round(chunk_steady, 6)
    elif size > DEFAULT_CHUNK_POINTS:
        out["engine_default_chunks"] = time_engine_chunks(problem, target_s)
    if mem_bw:
        best = mem_bw / bytes_per_point
        out["write_bound_points_per_s"] = best
        out["fraction_of_write_bound"] = pts / best
    return out, sample


def time_engine_chunks(problem, target_s: float) -> dict:
    """A comparison for whole-grid timings: a pass over the engine's default chunks (what
    sweep.run evaluates, without the device-to-host copies)."""
    chunk = DEFAULT_CHUNK_POINTS
    fn = make_chunk_fn(problem, chunk)
    offsets = [
        jnp.asarray(i * chunk, dtype=index_dtype(problem, chunk))
        for i in range(math.ceil(problem.size / chunk))
    ]
    _block(fn(offsets[0]))

    def one_pass():
        for off in offsets:
            _block(fn(off))

    times = repeat_timing(one_pass, 2, target_s, max_repeats=5)
    steady = float(np.median(times))
    return {
        "chunk_points": chunk,
        "chunks": len(offsets),
        "steady_median_s": round(steady, 6),
        "points_per_s": problem.size / steady,
    }


def time_formulas_only(problem, target_s: float, max_points: int = NUMPY_CHUNK) -> dict:
    """A breakdown: ``vmap`` of the point function on inputs gathered beforehand (no index
    generation or gathers inside the jitted function), on up to ``max_points`` points."""
    n = min(problem.size, max_points)
    p = numpy_model.gather(problem, *numpy_model.axis_tables(problem), np.arange(n))
    p = {k: jnp.asarray(v) for k, v in p.items()}
    keep = problem.outputs

    def run(q):
        out = jax.vmap(problem.point_fn)(q)
        return {k: v for k, v in out.items() if not keep or k in keep}

    fn = jax.jit(run)
    _block(fn(p))
    times = repeat_timing(lambda: _block(fn(p)), 3, min(target_s, 1.0))
    return {
        "points": n,
        "points_per_s": n / float(np.median(times)),
        "note": "inputs gathered beforehand; the gap to points_per_s is index generation "
        "(unravel) and gathers inside the engine's chunk function",
    }


def numpy_chunks(size: int, max_points: int) -> list[tuple[int, int]]:
    """(start, stop) of the numpy chunks: the whole grid, or evenly spread whole chunks."""
    chunk = min(NUMPY_CHUNK, size)
    n_all = math.ceil(size / chunk)
    if size <= max_points:
        return [(i * chunk, min((i + 1) * chunk, size)) for i in range(n_all)]
    n_take = max(1, max_points // chunk)
    picks = np.unique(np.linspace(0, n_all - 1, n_take).round().astype(int))
    return [(int(i) * chunk, min((int(i) + 1) * chunk, size)) for i in picks]


def time_numpy(problem, max_points: int, target_s: float) -> dict:
    tables = numpy_model.axis_tables(problem)
    spans = numpy_chunks(problem.size, max_points)
    timed = sum(b - a for a, b in spans)
    idx_dtype = np.int64

    def one_pass(gather_only=False):
        for a, b in spans:
            flat = np.arange(a, b, dtype=idx_dtype)
            p = numpy_model.gather(problem, *tables, flat)
            if not gather_only:
                numpy_model.roofline(numpy_model.prepare_roofline(p))

    times = repeat_timing(one_pass, 1, target_s, max_repeats=3)
    gather_times = repeat_timing(lambda: one_pass(True), 1, 0.0, max_repeats=1)
    steady = float(np.median(times))
    return {
        "points_timed": timed,
        "subsample": timed < problem.size,
        "chunk_points": min(NUMPY_CHUNK, problem.size),
        "steady_median_s": round(steady, 6),
        "repeats": len(times),
        "points_per_s": timed / steady,
        "gather_fraction": round(min(gather_times[0] / steady, 1.0), 3),
    }


def compare(got: dict, want: dict) -> dict:
    """Largest relative difference over float outputs; NaN patterns and integers exactly."""
    worst, nan_mismatch, exact_mismatch = 0.0, 0, 0
    for key, g in got.items():
        w = np.asarray(want[key])
        g = np.asarray(g)
        if g.dtype.kind == "f":
            gn, wn = np.isnan(g), np.isnan(w)
            nan_mismatch += int(np.count_nonzero(gn != wn))
            both = ~gn & ~wn
            if both.any():
                a, b = g[both].astype(np.float64), w[both].astype(np.float64)
                rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
                worst = max(worst, float(rel.max()))
        else:
            exact_mismatch += int(np.count_nonzero(g != w.astype(g.dtype)))
    return {
        "max_rel_diff": worst,
        "nan_pattern_mismatches": nan_mismatch,
        "int_bool_mismatches": exact_mismatch,
    }


def check_numpy_against_kernel(problem, sample: dict) -> dict:
    n = len(next(iter(sample.values())))
    want = numpy_model.evaluate_points(problem, np.arange(n, dtype=np.int64))
    out = compare(sample, {k: want[k] for k in sample})
    out["points"] = n
    return out


def python_point_tables(problem):
    """Per-axis rows as plain Python dicts, and the constants, for the per-point loop.

    Model fields are integers in a config.json (the reference loops over n_layers).
    """

    def value(key, x):
        return int(x) if key in MODEL_FIELDS else float(x)

    rows = []
    for axis in problem.axes:
        cols = {k: [value(k, x) for x in np.asarray(v).tolist()] for k, v in axis.fields.items()}
        rows.append([{k: cols[k][i] for k in cols} for i in range(len(axis))])
    return rows, {k: value(k, v) for k, v in problem.constants.items()}


def python_prepare(p: dict) -> dict:
    """The engine's prepare step, plain Python: the dtype's FLOP/s and the default sparsity."""
    i = int(p.pop("flops_index"))
    flops = [p.pop(k) for k in FLOPS_KEYS]
    p["flops"] = flops[i]
    if "sparsity" not in p:
        n_exp = p["n_experts"]
        p["sparsity"] = p["experts_per_token"] / n_exp if n_exp > 0 else 1.0
    return p


def time_python(problem, n_points: int, seed: int = 20261204) -> tuple[dict, np.ndarray, list]:
    """The plain-Python reference over random points of the grid, one at a time."""
    rng = np.random.default_rng(seed)
    n = min(n_points, problem.size)
    flat = np.sort(rng.choice(problem.size, size=n, replace=False)) if n < problem.size else None
    flat = np.arange(problem.size) if flat is None else flat
    rows, constants = python_point_tables(problem)
    shape = problem.shape
    flat_list = flat.tolist()
    t0 = time.perf_counter()
    results = []
    for f in flat_list:
        p = dict(constants)
        rest = f
        idx = []
        for dim in reversed(shape):
            rest, i = divmod(rest, dim)
            idx.append(i)
        for table, i in zip(rows, reversed(idx), strict=True):
            p.update(table[i])
        results.append(reference_model.roofline(python_prepare(p)))
    seconds = time.perf_counter() - t0
    pts = n / seconds
    return (
        {
            "points_timed": n,
            "seconds": round(seconds, 6),
            "points_per_s": pts,
            "extrapolated": n < problem.size,
            "extrapolated_grid_seconds": problem.size / pts,
            "note": (
                "tests/reference_model.py, one point at a time in Python floats (float64 "
                "whatever the precision), including the per-point unravel and input lookup; "
                f"timed on {n} random grid points and extrapolated as points/s"
            ),
        },
        flat,
        results,
    )


def check_python_against_numpy(problem, flat, results) -> dict:
    want = numpy_model.evaluate_points(
        problem, flat, tables=numpy_model.axis_tables(problem, np.float64)
    )
    got = np.array([r["tok_per_watt"] for r in results])
    w = want["tok_per_watt"]
    feasible_match = bool(np.array_equal(np.isnan(got), np.isnan(w)))
    both = ~np.isnan(got) & ~np.isnan(w)
    rel = np.abs(got[both] - w[both]) / np.abs(w[both]) if both.any() else np.zeros(1)
    return {
        "points": len(flat),
        "tok_per_watt_max_rel_diff": float(rel.max()),
        "feasible_pattern_equal": feasible_match,
    }


def time_sweep_run(spec: dict, precision: str, target_s: float):
    times, ds = [], None
    while True:
        ds = None
        t0 = time.perf_counter()
        ds = sweep.run(spec, precision=precision, progress=False)
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 or sum(times) >= target_s:
            break
    steady = float(np.median(times))
    return {
        "seconds": [round(t, 6) for t in times],
        "median_s": round(steady, 6),
        "points_per_s": ds.attrs["points"] / steady,
        "engine_compute_s": float(ds.attrs["compute_seconds"]),
        "note": "spec dict -> xarray Dataset; every call compiles afresh (a new jit closure)",
    }, ds


def write_spec_toml(spec: dict, path: Path) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(spec))
    return path


def time_cli(spec: dict, precision: str, out_dir: Path, ds, keep: bool) -> dict:
    """``sweep run SPEC -o FILE.nc`` in a subprocess, and write_netcdf of ``ds`` in-process."""
    from sweep.dataset import write_netcdf

    label = f"{spec['name']}-{precision}"
    spec_path = write_spec_toml(dict(spec, precision=precision), out_dir / f"{label}.toml")
    nc = out_dir / f"{label}.nc"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "sweep.cli", "run", str(spec_path), "-o", str(nc), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    out = {
        "command": "sweep run " + " ".join(cmd[4:]),
        "returncode": proc.returncode,
        "wall_s": round(wall, 6),
    }
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
        return out
    for line in proc.stdout.splitlines():
        if line.startswith("points:") and "seconds:" in line:
            out["cli_reported_s"] = float(line.split("seconds:")[1].split()[0])
    out["netcdf_bytes"] = nc.stat().st_size
    out["points_per_s_wall"] = ds.attrs["points"] / wall
    if not keep:
        nc.unlink()
        spec_path.unlink()
    if ds is not None:
        tmp = out_dir / f"{label}.inproc.nc"
        t0 = time.perf_counter()
        write_netcdf(ds, tmp)
        out["inprocess_write_netcdf_s"] = round(time.perf_counter() - t0, 6)
        tmp.unlink()
    out["note"] = (
        "wall_s: the whole command (Python start-up, imports, spec, compile, compute, "
        "compressed NETCDF4 write, zlib level 1 + shuffle); cli_reported_s: its own timer "
        "(sweep.run + write); inprocess_write_netcdf_s: the write alone, in this process"
    )
    return out


# ---------------------------------------------------------------------------------------------
# the run


def ratio(a, b):
    return None if not a or not b else a / b


def bench_one(size, precision, args, python_cache, mem_bw) -> dict:
    spec_dict = roofline_spec(size, precision)
    spec = load_spec(spec_dict, precision=precision)
    problem = build_problem(spec, outputs=outputs_of(spec))
    row = {
        "size": size,
        "points": problem.size,
        "precision": precision,
        "dims": list(problem.dims),
        "shape": list(problem.shape),
    }
    # thresholds compare with the size asked for (1e7 -> 10,007,712 points is still "1e7")
    kernel, sample = time_kernel(
        problem, size <= args.whole_max, args.kernel_chunk, args.repeat_seconds, mem_bw
    )
    kernel["formulas_only"] = time_formulas_only(problem, args.repeat_seconds)
    row["kernel"] = kernel
    mem = {"rss_peak_mb_after_kernel": rss_peak_mb()}
    row["numpy"] = time_numpy(problem, args.numpy_max, args.repeat_seconds)
    mem["rss_peak_mb_after_numpy"] = rss_peak_mb()
    row["check"] = {"numpy_vs_kernel": check_numpy_against_kernel(problem, sample)}
    del sample

    if size not in python_cache:
        python, flat, results = time_python(problem, args.python_points)
        python["vs_numpy_float64"] = check_python_against_numpy(problem, flat, results)
        python_cache[size] = python
    row["python"] = python_cache[size]

    ds = None
    if size <= args.e2e_max:
        row["sweep_run"], ds = time_sweep_run(spec_dict, precision, args.repeat_seconds)
        mem["rss_peak_mb_after_sweep_run"] = rss_peak_mb()
    else:
        row["sweep_run"] = {
            "skipped": (
                f"size {size:,} > --e2e-max {args.e2e_max:,}: the in-memory dataset "
                f"(~{problem.size * kernel['bytes_written_per_point'] / 1e9:.1f} GB of outputs "
                "on the host, before xarray) is not run end to end; the kernel is timed in "
                "chunks instead"
            )
        }
    row["cli"] = None
    if size in args.cli_sizes:
        if ds is None:
            row["cli"] = {"skipped": "no sweep_run at this size (see sweep_run.skipped)"}
        else:
            row["cli"] = time_cli(spec_dict, precision, args.out, ds, args.keep_nc)
    del ds
    mem["rss_peak_mb_after_cli"] = rss_peak_mb()
    mem["device_peak_mb"] = device_peak_mb()
    mem["note"] = (
        "ru_maxrss is the process's peak resident set so far (monotone; sizes run in "
        "ascending order); device_peak_mb is the JAX device's own peak where it reports one"
    )
    row["memory"] = mem
    k, n, p = kernel["points_per_s"], row["numpy"]["points_per_s"], row["python"]["points_per_s"]
    e2e = row["sweep_run"].get("points_per_s")
    row["ratios"] = {
        "kernel_over_numpy": ratio(k, n),
        "kernel_over_python": ratio(k, p),
        "sweep_run_over_numpy": ratio(e2e, n),
        "sweep_run_over_python": ratio(e2e, p),
        "numpy_over_python": ratio(n, p),
    }
    return row


def notes() -> dict:
    return {
        "kernel": (
            "sweep.engine.make_chunk_fn: index generation, gathers, vmap(roofline point), the "
            "12 dataset outputs left on the device; compile_s = first call - steady median "
            "(the first call also ran once); lower_s/xla_compile_s: the same function "
            "compiled ahead of time, as a breakdown"
        ),
        "numpy": "benchmarks/numpy_model.py: same gathers and formulas, 2**20-point chunks",
        "python": (
            "tests/reference_model.py per point; timed on a random subsample and "
            "extrapolated as points/s (the loop's cost per point does not depend on grid size)"
        ),
        "write_bound": (
            "bytes written per point / memory bandwidth: the best possible points/s for a "
            "kernel whose inputs come from tiny (cached) tables; mem_bw is --mem-bw or, "
            "when not given, a measured host copy bandwidth (read + write bytes)"
        ),
        "memory": "ru_maxrss (peak RSS, monotone); tracemalloc cannot see JAX buffers",
        "threads": (
            "numpy ufuncs run on one thread; XLA's CPU backend may use every core: the "
            "kernel/numpy ratio on a CPU includes that"
        ),
        "blas": "elementwise formulas: BLAS plays no part (see blas)",
    }


def write_json(report: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x).__name__)


def summary_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        rows.append(
            {
                "points": r["points"],
                "precision": r["precision"],
                "kernel_pts_s": r["kernel"]["points_per_s"],
                "kernel_compile_s": r["kernel"]["compile_s"],
                "sweep_run_pts_s": r["sweep_run"].get("points_per_s"),
                "numpy_pts_s": r["numpy"]["points_per_s"],
                "python_pts_s": r["python"]["points_per_s"],
                "kernel_over_numpy": r["ratios"]["kernel_over_numpy"],
                "kernel_over_python": r["ratios"]["kernel_over_python"],
                "cli_wall_s": (r["cli"] or {}).get("wall_s"),
                "kernel_fraction_of_write_bound": r["kernel"]["fraction_of_write_bound"],
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    def g(x, fmt="{:.3g}"):
        return "-" if x is None else fmt.format(x)

    head = (
        f"{'points':>12} {'prec':>7} {'kernel/s':>9} {'compile':>8} {'run/s':>9} "
        f"{'numpy/s':>9} {'python/s':>9} {'k/np':>7} {'k/py':>8} {'cli s':>7} {'bound':>6}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['points']:>12,} {r['precision']:>7} {g(r['kernel_pts_s']):>9} "
            f"{g(r['kernel_compile_s']):>8} {g(r['sweep_run_pts_s']):>9} "
            f"{g(r['numpy_pts_s']):>9} {g(r['python_pts_s']):>9} "
            f"{g(r['kernel_over_numpy'], '{:.1f}'):>7} {g(r['kernel_over_python'], '{:.0f}'):>8} "
            f"{g(r['cli_wall_s'], '{:.2f}'):>7} "
            f"{g(r['kernel_fraction_of_write_bound'], '{:.1%}'):>6}"
        )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    fig, ax = plt.subplots(figsize=(11, 6))
    styles = {"float32": "-", "float64": "--"}
    colors = {"kernel": "C0", "sweep_run": "C1", "numpy": "C2", "python": "C3", "cli": "C4"}
    labels = {
        "kernel": "JAX kernel (steady state)",
        "sweep_run": "sweep.run end to end",
        "numpy": "numpy",
        "cli": "sweep run CLI incl. netCDF write",
    }
    for precision in report["settings"]["precisions"]:
        rows = sorted(
            (r for r in results if r["precision"] == precision), key=lambda r: r["points"]
        )
        for engine in ("kernel", "sweep_run", "numpy"):
            pts = [(r["points"], r[engine].get("points_per_s")) for r in rows]
            pts = [(x, y) for x, y in pts if y]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    styles[precision],
                    marker="o",
                    color=colors[engine],
                    label=f"{labels[engine]}, {precision}",
                )
        cli = [(r["points"], r["cli"].get("points_per_s_wall")) for r in rows if r["cli"]]
        cli = [(x, y) for x, y in cli if y]
        if cli:
            ax.plot(
                *zip(*cli, strict=True),
                styles[precision],
                marker="s",
                color=colors["cli"],
                label=f"{labels['cli']}, {precision}",
            )
        bound = [(r["points"], r["kernel"].get("write_bound_points_per_s")) for r in rows]
        bound = [(x, y) for x, y in bound if y]
        if bound:
            ax.plot(
                *zip(*bound, strict=True),
                linestyle=":" if precision == "float32" else (0, (1, 4)),
                color="grey",
                label=f"memory-write bound (bytes written / mem_bw), {precision}",
            )
    rows = {r["points"]: r["python"]["points_per_s"] for r in results}
    if rows:
        xs = sorted(rows)
        ax.plot(
            xs,
            [rows[x] for x in xs],
            "-.",
            marker="^",
            color=colors["python"],
            label="pure Python per point (extrapolated from a subsample)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("grid size (points)")
    ax.set_ylabel("points per second")
    m = report["machine"]
    ax.set_title(
        f"1/W sweep throughput: {m['device']}, {m['cpus_usable']} CPUs, "
        f"JAX {report['software']['jax']}",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        type=size_list,
        default=None,
        help="grid sizes (default 1e4,1e5,1e6,1e7,1e8; --quick: 1e4,1e5,1e6)",
    )
    p.add_argument("--precisions", default="float32,float64")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench")
    p.add_argument("--quick", action="store_true", help="CI-sized: 1e4..1e6, short repeats")
    p.add_argument(
        "--whole-max",
        type=parse_size,
        default=parse_size("1e7"),
        help="largest grid timed as one kernel call; above: fixed-shape chunks",
    )
    p.add_argument(
        "--kernel-chunk",
        type=parse_size,
        default=1 << 22,
        help="points per chunk above --whole-max",
    )
    p.add_argument(
        "--e2e-max",
        type=parse_size,
        default=parse_size("1e7"),
        help="largest grid run end to end through sweep.run",
    )
    p.add_argument(
        "--cli-sizes",
        type=size_list,
        default=None,
        help="sizes at which the sweep run CLI (netCDF write) is timed (1e6,1e7)",
    )
    p.add_argument(
        "--numpy-max",
        type=parse_size,
        default=parse_size("1e7"),
        help="points timed per size in numpy (above: a spread subsample)",
    )
    p.add_argument("--python-points", type=parse_size, default=20000)
    p.add_argument(
        "--repeat-seconds",
        type=float,
        default=None,
        help="time budget for repeated calls (default 1.0; --quick 0.3)",
    )
    p.add_argument(
        "--mem-bw",
        type=float,
        default=None,
        help="peak memory bandwidth in bytes/s for the write bound (GPU: 4.8e12 "
        "for an H200); default: measured host copy bandwidth on CPU",
    )
    p.add_argument("--keep-nc", action="store_true", help="keep the CLI's netCDF files")
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = size_list("1e4,1e5,1e6" if args.quick else "1e4,1e5,1e6,1e7,1e8")
    if args.cli_sizes is None:
        args.cli_sizes = size_list("1e6" if args.quick else "1e6,1e7")
    if args.repeat_seconds is None:
        args.repeat_seconds = 0.3 if args.quick else 1.0
    if args.quick and args.python_points == 20000:
        args.python_points = 5000
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    for x in args.precisions:
        if x not in ("float32", "float64"):
            p.error(f"precision {x!r}: float32 or float64")
    args.sizes = sorted(set(args.sizes))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    original_env = openblas_env_at_start()
    backend = jax.default_backend()
    mem_bw, mem_bw_source = args.mem_bw, "--mem-bw"
    if mem_bw is None and backend == "cpu":
        mem_bw, mem_bw_source = host_copy_bandwidth(), "measured host copy (numpy, read+write)"
    report = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": " ".join(["python", "benchmarks/bench.py", *(argv or sys.argv[1:])]),
        "settings": {
            "sizes": args.sizes,
            "precisions": args.precisions,
            "quick": args.quick,
            "whole_max": args.whole_max,
            "kernel_chunk": args.kernel_chunk,
            "e2e_max": args.e2e_max,
            "cli_sizes": args.cli_sizes,
            "numpy_max": args.numpy_max,
            "python_points": args.python_points,
            "repeat_seconds": args.repeat_seconds,
            "mem_bw": mem_bw,
            "mem_bw_source": mem_bw_source if mem_bw else None,
            "grid": "roofline: catalog GPUs x models x tp 1,2,4,8 x bf16,fp8,fp4 x batch x context",
        },
        "machine": machine_info(),
        "software": software_info(),
        "blas": blas_info(original_env),
        "notes": notes(),
        "results": [],
    }
    json_path = args.out / "bench.json"
    python_cache: dict = {}
    print(format_table([]), flush=True)
    for size in args.sizes:
        for precision in args.precisions:
            t0 = time.perf_counter()
            row = bench_one(size, precision, args, python_cache, mem_bw)
            row["bench_seconds"] = round(time.perf_counter() - t0, 3)
            report["results"].append(row)
            report["summary"] = summary_rows(report["results"])
            write_json(report, json_path)
            print(format_table(report["summary"][-1:]).splitlines()[-1], flush=True)
    report["plot"] = str(plot(report, args.out / "bench.png"))
    write_json(report, json_path)
    print(format_table(report["summary"]))
    print(f"wrote {json_path} and {report['plot']}")
    return report


if __name__ == "__main__":
    reexec_without_openblas_overrides()
    main()
