#!/usr/bin/env bash
# One worker's fixed costs at 720p on one core, old build against new in the same run: the
# pass-through pipeline of examples/worker_bench.rs (decode exactly each batch's frames, encode
# the chunk with the job's default encoder and check it with ffprobe; no network) on Big Buck
# Bunny (film (c) Blender Foundation, CC BY 3.0) re-encoded at 1280x720 the way
# scripts/bench-worker.sh does (x264 defaults: one keyframe in the clip), pinned to one core
# (`taskset -c 0`), in 16-frame batches (the default): the first 16 frames (one batch) and all 132
# (9 batches). Three configurations run in turn, ROUNDS times (A, B per range, B, A, ...):
#
#   A              build A's worker_bench (as given);
#   B per-range    build B's with WORKER_BENCH_DECODE=per-range (an ffmpeg per batch, from the
#                  keyframe at or before it, as A decodes);
#   B              build B's as a worker runs it (one decoder kept open across the batches).
#
# Prints the raw JSON lines, then medians per configuration with frames/s, ms per frame, the
# frames decoded, and the ratio of each median to A's.
#
# Usage: scripts/bench-worker-cost.sh <dir of build A's worker_bench> <dir of build B's>
# Environment: ROUNDS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

a="$1/worker_bench"
b="$2/worker_bench"
rounds="${ROUNDS:-5}"
bash scripts/fetch-footage.sh >/dev/null
source=.cache/footage/bigbuckbunny.mp4
work="$(mktemp -d -t stylefleet-worker-cost.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A: $a"
echo "B: $b"

clip="$work/bbb-1280x720-132.mp4"
ffmpeg -v error -i "$source" -frames:v 132 -t 5.28 -vf scale=1280:720 -c:v libx264 -preset veryfast \
    -crf 16 -c:a copy "$clip"
echo "keyframes of the clip (frame indices): $(ffprobe -v error -select_streams v -show_entries frame=key_frame \
    -of csv=p=0 "$clip" | awk -F, 'NF && $1 != "" { if ($1 == 1) printf "%d ", n; n++ } END { printf "of %d frames", n }')"

results="$work/results.jsonl"
for round in $(seq "$rounds"); do
    for frames in 16 132; do
        for config in "A" "B per-range" "B"; do
            case $config in
                A) cmd=(taskset -c 0 "$a" "$clip" none "$frames" 16) ;;
                "B per-range") cmd=(env WORKER_BENCH_DECODE=per-range taskset -c 0 "$b" "$clip" none "$frames" 16) ;;
                B) cmd=(taskset -c 0 "$b" "$clip" none "$frames" 16) ;;
            esac
            line=$("${cmd[@]}")
            echo "round $round, $config: $line"
            echo "$line" | python3 -c "import json, sys; r = json.loads(sys.stdin.read()); r['config'] = '$config'; print(json.dumps(r))" >>"$results"
        done
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| frames (batches) | config | runs | frames/s | ms/frame | decode s | encode s | frames decoded | wall / A's |")
print("|---|---|---|---|---|---|---|---|---|")
for frames in (16, 132):
    base = None
    for config in ("A", "B per-range", "B"):
        rs = [r for r in rows if r["frames"] == frames and r["config"] == config]
        if not rs:
            continue
        wall = statistics.median(r["wall_s"] for r in rs)
        dec = statistics.median(r["decode_s"] for r in rs)
        enc = statistics.median(r["encode_s"] for r in rs)
        decoded = rs[0].get("decoded_frames", "")
        if config == "A":
            base = wall
        ratio = f"{wall / base:.2f}" if base else ""
        print(f"| {frames} ({rs[0]['batches']}) | {config} | {len(rs)} | {frames / wall:.1f} | {1000 * wall / frames:.1f} | "
              f"{dec:.3f} | {enc:.3f} | {decoded} | {ratio} |")
PY
