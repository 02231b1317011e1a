#!/usr/bin/env bash
# Runs the multistyle GPU benchmark ON the GPU machine (no Rust there): the binaries and frames
# that scripts/gpu/build-cuda.sh put in .cache/gpu-bundle, the CUDA libraries of the machine's
# PyTorch install, one run that writes everything under $OUT.
#
#   OUT=/some/dir scripts/gpu/run-gpu-bench.sh [--quick]
#
# Writes $OUT/results/<date>-<gpu>.md (the raw output to commit under bench/results/), one table
# file per pass, and $OUT/run.log. Each pass has its own time limit (565 s in all at most, 3-5
# minutes expected), so a pass that hangs or runs out of memory leaves the others' results.
# --quick: 720p only, batches 1 and 8 (a smoke test).
# BENCH_ARGS: options appended to every pass (later options win), e.g. a self-test of this script
# on a CPU-only machine with BENCH_ARGS="--cpu-standin --sizes 64x48 --batches 1 --dtypes f32".
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bundle="${BUNDLE:-$root/.cache/gpu-bundle}"
out="${OUT:-$root/gpu-out}"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
mkdir -p "$out/results"
exec > >(tee -a "$out/run.log") 2>&1

# Libraries: the driver's libcuda.so.1 from the system; CUDA 13 runtime, cuBLAS, cuRAND, NVRTC
# (the fused kernels are compiled at run time) and cuDNN 9 from PyTorch's wheels.
sp="${TORCH_SITE_PACKAGES:-/opt/torch/.venv/lib/python3.12/site-packages}"
libs=""
for d in "$sp"/nvidia/*/lib; do [ -d "$d" ] && libs="$libs:$d"; done
[ -d /usr/local/cuda/lib64 ] && libs="$libs:/usr/local/cuda/lib64"
export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Keep Candle's errors to one line each in the tables.
unset RUST_BACKTRACE
# The fused kernels: the timed passes load the PTX that nvcc 13.0 compiled with the binaries (the
# machine's NVRTC may be newer than its driver); the nvrtc-check pass compiles them with NVRTC,
# as a process without STYLEFLEET_CUDA_PTX does.
ptx="$bundle/multistyle-kernels.ptx"

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) host $(uname -srm); $(ldd --version 2>&1 | head -n 1)"
gpu="unknown-gpu"
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader
    gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
fi
echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for n in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 \
    libnvrtc.so.13 libnvrtc-builtins.so.13.0 libcudnn.so.9; do
    found=$( (IFS=:; for d in $LD_LIBRARY_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib64; do
        [ -e "$d/$n" ] && echo "$d/$n"; done) | head -n 1)
    echo "   $n -> ${found:-NOT FOUND}"
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for gz in "$bundle"/gpu_bench*.gz; do
    [ -f "$gz" ] || { echo "!! no binaries in $bundle: run scripts/gpu/build-cuda.sh first"; exit 1; }
    name="$(basename "${gz%.gz}")"
    gzip -dc "$gz" > "$tmp/$name" && chmod +x "$tmp/$name"
    if ldd "$tmp/$name" | grep -q "not found"; then
        echo "!! $name: missing shared libraries"
        ldd "$tmp/$name" | grep "not found"
    fi
done

if [ "$quick" = 1 ]; then
    grid=(--sizes 1280x720 --batches 1,8 --min-secs 0.5)
else
    grid=(--sizes 1280x720,1920x1080 --batches 1,8,32 --min-secs 1.0)
fi

# One pass: binary, label, time limit, then gpu_bench options.
pass() {
    local bin="$1" label="$2" limit="$3"
    shift 3
    [ -x "$tmp/$bin" ] || { echo "!! $bin not built, pass $label skipped"; return; }
    echo
    echo "################ $label: $bin $* (STYLEFLEET_CUDA_PTX=${STYLEFLEET_CUDA_PTX:-unset, NVRTC})"
    local start=$SECONDS
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of options
    timeout "$limit" "$tmp/$bin" --frames "$bundle/frames" --out "$out/$label.md" "$@" ${BENCH_ARGS:-}
    echo "== $label: exit code $?, $((SECONDS - start)) s"
}

# Fused kernels: the full grid, with and without cuDNN for the convs.
STYLEFLEET_CUDA_PTX="$ptx" pass gpu_bench cuda-fused 200 "${grid[@]}"
STYLEFLEET_CUDA_PTX="$ptx" pass gpu_bench_cudnn cudnn-fused 200 "${grid[@]}"
# The same kernels compiled at run time by NVRTC: one check and one row.
pass gpu_bench nvrtc-check 45 --sizes 1280x720 --batches 8 --dtypes f16 --modes model \
    --check-sizes 1280x720 --min-secs 0.5
# Plain Candle ops, for comparison: one size and batch, model only.
pass gpu_bench cuda-plain 60 --variants plain --sizes 1280x720 --batches 8 --modes model \
    --check-sizes 1280x720 --min-secs 1.0
pass gpu_bench_cudnn cudnn-plain 60 --variants plain --sizes 1280x720 --batches 8 --modes model \
    --check-sizes 1280x720 --min-secs 1.0

# One file with everything, named after the date and the GPU.
stamp="$(date -u +%Y-%m-%d)-$(echo "$gpu" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-//; s/-$//')"
result="$out/results/$stamp.md"
{
    echo "# multistyle GPU benchmark, $(date -u +%Y-%m-%d), $gpu"
    echo
    echo "Raw output of scripts/gpu/run-gpu-bench.sh$([ "$quick" = 1 ] && echo ' --quick')."
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>/dev/null
    echo '```'
    for label in cuda-fused cudnn-fused nvrtc-check cuda-plain cudnn-plain; do
        [ -f "$out/$label.md" ] || continue
        echo
        echo "# pass: $label"
        echo
        sed 's/^#/##/' "$out/$label.md"
    done
} > "$result"
echo
echo "== wrote $result"
