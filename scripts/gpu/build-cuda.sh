#!/usr/bin/env bash
# Builds the GPU binaries (Candle's CUDA backend, compute capability 9.0) on a Linux x86_64 machine
# with no GPU and no CUDA install, for a GPU machine with driver 580 / CUDA 13.0 that has no Rust
# toolchain and no internet.
#
#   scripts/gpu/build-cuda.sh [--bench-only] [--no-cudnn]
#
# 1. installs the CUDA 13.0 compiler, headers and link-time libraries from PyPI into
#    .cache/cuda-venv (pinned: nvidia-nvvm unpinned would pull a newer cicc whose PTX a 13.0
#    driver cannot load);
# 2. assembles a CUDA root in .cache/cuda-root (bin/include/nvvm links, unversioned .so links,
#    and a link-time stand-in for the driver's libcuda.so.1 with one dummy symbol per entry point
#    cudarc declares; the stand-in is never shipped);
# 3. fetches libcudnn.so.9 from the nvidia-cudnn-cu13 wheel the GPU machine's PyTorch pins (for
#    the `cudnn` build);
# 4. compiles the fused kernels' source to PTX with nvcc (a check here; the binaries compile it
#    with NVRTC at run time, or load this PTX when STYLEFLEET_CUDA_PTX names it);
# 5. builds in target/cuda (apart from the CPU builds):
#    - the benchmark `gpu_bench` with `--features cuda`, and again with `--features cudnn`;
#    - unless --bench-only: `stylefleet-worker` and `stylefleet` with `--features cuda`;
# 6. strips and gzips them, with a few real frames (Big Buck Bunny, see scripts/fetch-footage.sh),
#    into .cache/gpu-bundle (the benchmark: carry it to the GPU machine and run
#    scripts/gpu/run-gpu-bench.sh there) and .cache/gpu-bin (the worker binaries).
#
# Needs: cargo, python3 with venv, gcc, ffmpeg, unzip; PyPI and crates.io. About 1.3 GB in .cache.
set -euo pipefail

# The whole script is one function, read before it runs: editing the file during a build (it takes
# minutes) cannot change what the running build does.
main() {
bench_only=0
cudnn=1
for arg in "$@"; do
    case "$arg" in
        --bench-only) bench_only=1 ;;
        --no-cudnn) cudnn=0 ;;
        *) echo "usage: $0 [--bench-only] [--no-cudnn]" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="$root/.cache"
venv="$cache/cuda-venv"
cuda="$cache/cuda-root"
bundle="$cache/gpu-bundle"
bin="$cache/gpu-bin"
target="$root/target/cuda"
mkdir -p "$cache"

step() { printf '\n== %s\n' "$*"; }

# 1. CUDA 13.0 from PyPI (everything lands in site-packages/nvidia/cu13).
step "CUDA 13.0 packages"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35
cu13="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"

# 2. A CUDA root for the build scripts of cudarc and candle-kernels.
step "CUDA root in $cuda"
mkdir -p "$cuda/lib64/stubs"
ln -sfn "$cu13/bin" "$cuda/bin"
ln -sfn "$cu13/include" "$cuda/include"
ln -sfn "$cu13/nvvm" "$cuda/nvvm"
ln -sfn lib64 "$cuda/lib"
for f in "$cu13"/lib/*.so.*; do ln -sfn "$f" "$cuda/lib64/$(basename "$f")"; done
ln -sfn libcudart.so.13 "$cuda/lib64/libcudart.so"
ln -sfn libcublas.so.13 "$cuda/lib64/libcublas.so"
ln -sfn libcublasLt.so.13 "$cuda/lib64/libcublasLt.so"
ln -sfn libcurand.so.10 "$cuda/lib64/libcurand.so"
ln -sfn libnvrtc.so.13 "$cuda/lib64/libnvrtc.so"

# The driver library comes with the driver only: link against a stand-in that has every cu*
# symbol cudarc declares (the real one is found at run time on the GPU machine).
(cd "$root" && cargo fetch -q)
cudarc_version="$(awk '/^name = "cudarc"/ { getline; gsub(/[" ]/, "", $0); sub(/version=/, "", $0); print; exit }' "$root/Cargo.lock")"
cudarc_src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_version" | head -n 1)"
grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc_src/src/driver/sys/mod.rs" | awk '{ print $4 }' | sort -u \
    | awk '{ print "int " $1 "(void) { return 999; }" }' > "$cuda/cuda_stub.c"
gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$cuda/lib64/stubs/libcuda.so" "$cuda/cuda_stub.c"

# 3. cuDNN: only libcudnn.so.9 (the loader of the per-engine libraries) is linked against.
cudnn_dir="$cache/cudnn"
if [ "$cudnn" = 1 ] && [ ! -e "$cudnn_dir/nvidia/cudnn/lib/libcudnn.so" ]; then
    step "libcudnn.so.9 from nvidia-cudnn-cu13 9.19.0.56"
    mkdir -p "$cache/wheels" "$cudnn_dir"
    "$venv/bin/pip" download -q --no-deps -d "$cache/wheels" nvidia-cudnn-cu13==9.19.0.56
    (cd "$cudnn_dir" \
        && unzip -o -q "$cache"/wheels/nvidia_cudnn_cu13-9.19.0.56-*.whl "nvidia/cudnn/lib/libcudnn.so.9" \
        && ln -sfn libcudnn.so.9 nvidia/cudnn/lib/libcudnn.so)
fi

export CUDA_ROOT="$cuda" CUDA_HOME="$cuda" CUDA_PATH="$cuda"
export NVCC="$cuda/bin/nvcc" PATH="$cuda/bin:$PATH"
# cudaforge (candle-kernels' build) turns 90 into sm_90a; cudarc reads the CUDA version from nvcc.
export CUDA_COMPUTE_CAP=90 CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
export CUDNN_LIB="$cudnn_dir/nvidia/cudnn"

# 4. The fused kernels: NVRTC compiles them on the GPU machine; nvcc checks them here.
step "nvcc check of models/src/multistyle/kernels.cu"
nvcc -ptx -arch=compute_90 "$root/models/src/multistyle/kernels.cu" -o "$cache/multistyle-kernels.ptx"
grep -c '^.visible .entry' "$cache/multistyle-kernels.ptx" | sed 's/^/kernels: /'

# 5. Build.
cd "$root"
build() {
    step "cargo build --release --target-dir target/cuda $*"
    time cargo build --release --locked --target-dir "$target" "$@"
}
rm -rf "$bundle" "$bin"
mkdir -p "$bundle" "$bin"
build -p stylefleet-models --example gpu_bench --features cuda
cp "$target/release/examples/gpu_bench" "$bundle/gpu_bench"
if [ "$cudnn" = 1 ]; then
    build -p stylefleet-models --example gpu_bench --features cudnn
    cp "$target/release/examples/gpu_bench" "$bundle/gpu_bench_cudnn"
fi
if [ "$bench_only" = 0 ]; then
    build -p stylefleet-worker -p stylefleet \
        --features stylefleet-worker/cuda,stylefleet/cuda --bin stylefleet-worker --bin stylefleet
    cp "$target/release/stylefleet-worker" "$target/release/stylefleet" "$bin/"
fi

# 6. Real frames for the correctness check and the batches.
step "frames"
"$root/scripts/fetch-footage.sh"
mkdir -p "$bundle/frames"
ffmpeg -hide_banner -nostdin -loglevel error -y -i "$cache/footage/bigbuckbunny.mp4" \
    -vf "select='eq(n\,10)+eq(n\,50)+eq(n\,90)+eq(n\,120)'" -fps_mode passthrough -q:v 2 \
    "$bundle/frames/bbb_%02d.jpg"

step "strip, gzip"
for f in "$bundle"/gpu_bench* "$bin"/*; do
    [ -f "$f" ] || continue
    strip "$f"
    gzip -9 -f "$f"
done
# The fused kernels compiled ahead of time by nvcc 13.0: run-gpu-bench.sh points
# STYLEFLEET_CUDA_PTX at it when the machine's NVRTC cannot be used.
cp "$cache/multistyle-kernels.ptx" "$bundle/"
(cd "$bundle" && sha256sum gpu_bench*.gz multistyle-kernels.ptx frames/* > SHA256SUMS)
ls -la "$bundle" "$bundle/frames" "$bin"
du -sh "$bundle"
echo "ready: carry .cache/gpu-bundle to the GPU machine and run scripts/gpu/run-gpu-bench.sh"
}

main "$@"
