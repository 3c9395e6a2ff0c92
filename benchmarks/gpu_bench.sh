#!/usr/bin/env bash
# The benchmark on the H200 node, in one command that installs nothing from the network and
# ends within 5 minutes. From the session that holds the device tool (see benchmarks/README.md):
#
#   run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"], timeout_s=420)
#
# .whl/ holds netCDF4, cftime and tomli-w (the image has everything else); the README gives
# the pip download command that fills it. Writes under $OUT (outputs/bench/gpu elsewhere):
#   gpu_bench.log  everything printed       env.txt       nvidia-smi, JAX devices, pip show
#   bench.json     bench.py's report        bench.png     its plot
#   pytest_gpu.log pytest -m gpu (when any GPU-marked test exists)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/bench/gpu}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_bench.log") 2>&1
t_start=$(date +%s)
elapsed() { echo $(($(date +%s) - t_start)); }

export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# The CLI step starts a second JAX process on the same GPU: no 75% preallocation.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=python3

echo "== [$(elapsed) s] packages (no network: wheels from .whl, the project itself editable)"
# GPU_BENCH_SIZES and GPU_BENCH_SKIP_INSTALL=1 exist for a dry run of this script on a CPU.
SIZES="${GPU_BENCH_SIZES:-1e6,1e7,1e8,1e9}"
if [ "${GPU_BENCH_SKIP_INSTALL:-0}" = 1 ]; then
    echo "skipped (GPU_BENCH_SKIP_INSTALL=1)"
elif ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .whl/: the netCDF write steps will fail (see benchmarks/README.md)"
fi
# --no-build-isolation: an isolated build would fetch setuptools from the network
if [ "${GPU_BENCH_SKIP_INSTALL:-0}" != 1 ]; then
    $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . || {
        echo "editable install failed: using PYTHONPATH"
        export PYTHONPATH="$PWD:${PYTHONPATH:-}"
    }
fi

echo "== [$(elapsed) s] environment"
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,power.limit \
        --format=csv 2>&1
    $PY -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())" 2>&1
    $PY -m pip show jax jaxlib numpy xarray netCDF4 2>/dev/null | grep -E '^(Name|Version)'
    nproc
} | tee "$OUT/env.txt"

echo "== [$(elapsed) s] bench.py: 1e6..1e9, float32 and float64 (kernel only above 1e8)"
# Up to 1e8 points the kernel is one call on the whole grid and sweep.run runs end to end;
# 1e9 is timed in fixed-shape chunks of 2**26 points. The write bound uses the H200's
# 4.8 TB/s (datasheet). numpy (single-threaded, host) is timed on 4e6 points per size.
scratch=$(mktemp -d)
timeout 230 $PY benchmarks/bench.py \
    --sizes "$SIZES" --precisions float32,float64 --out "$scratch" \
    --whole-max 1e8 --kernel-chunk 67108864 --e2e-max 1e8 --cli-sizes 1e6,1e7 \
    --numpy-max 4e6 --python-points 5000 --repeat-seconds 0.5 --mem-bw 4.8e12
echo "bench.py exit $? after $(elapsed) s (124 = stopped by its timeout; bench.json holds the sizes done)"
cp "$scratch"/bench.json "$scratch"/bench.png "$OUT"/ 2>/dev/null
rm -rf "$scratch"

echo "== [$(elapsed) s] pytest -m gpu"
gpu_tests=$(grep -rlE "mark\.gpu|pytestmark.*gpu" tests --include='*.py' 2>/dev/null || true)
if [ -n "$gpu_tests" ]; then
    # shellcheck disable=SC2086
    timeout 45 $PY -m pytest -q -p no:cacheprovider -m gpu $gpu_tests 2>&1 | tee "$OUT/pytest_gpu.log"
    echo "pytest exit ${PIPESTATUS[0]}"
else
    echo "no GPU-marked tests in tests/" | tee "$OUT/pytest_gpu.log"
fi
echo "== done in $(elapsed) s"
ls -la "$OUT"
