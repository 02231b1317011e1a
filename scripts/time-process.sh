#!/usr/bin/env bash
# Times `stylefleet process` on the real clip (Big Buck Bunny, 5.3 s, 1280x720, 25 fps, AAC 5.1;
# film (c) Blender Foundation, CC BY 3.0) with the default settings and 2 workers, on a fresh
# data folder so that nothing is reused. Prints the wall time, the split/style/stitch breakdown
# that `process` reports, and the job's timings from `status --json`.
#
# Usage: scripts/time-process.sh [style] [extra `stylefleet process` options]
# Environment: KEEP=1 keeps the data folder and the output (their path is printed); CLIP=<file>
# times another video instead.
set -euo pipefail
cd "$(dirname "$0")/.."

style="${1:-0}"
shift || true

clip="${CLIP:-.cache/footage/bigbuckbunny.mp4}"
if [[ -z "${CLIP:-}" ]]; then
    bash scripts/fetch-footage.sh >/dev/null
fi
cargo build --release --quiet --bin stylefleet
bin=./target/release/stylefleet

work="$(mktemp -d -t stylefleet-time.XXXXXX)"
if [[ "${KEEP:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi
data="$work/data"
out="$work/$(basename "${clip%.*}").styled.mp4"

frames="$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets \
    -of csv=p=0 "$clip")"
echo "clip: $clip ($frames frames, $(ffprobe -v error -select_streams v:0 \
    -show_entries stream=width,height -of csv=s=x:p=0 "$clip"))"
echo "machine: $(nproc) cores; $(uname -sm)"
cmd=("$bin" process "$clip" --style "$style" --workers 2 --quiet --data "$data" -o "$out" "$@")
echo "command: ${cmd[*]}"

log="$work/process.log"
start="$(date +%s.%N)"
if ! "${cmd[@]}" >/dev/null 2>"$log"; then
    cat "$log" >&2
    echo "stylefleet process failed" >&2
    exit 1
fi
end="$(date +%s.%N)"
wall="$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"

echo
echo "process says: $(grep -E '^job [0-9a-f]+ done:' "$log")"
awk -v w="$wall" -v f="$frames" 'BEGIN { printf "wall time: %.1f s (%.2f frames/s)\n", w, f / w }'
echo
echo "status --json timings (seconds):"
"$bin" status --json --data "$data" >"$work/status.json"
python3 - "$work/status.json" <<'PY'
import json, sys
for job in json.load(open(sys.argv[1])):
    print(f"  job {job['job']}: {job['state']}, {job['frames_done']}/{job['frames_total']} frames, "
          f"{job['batches_total']} batches, {job['fps']:.2f} frames/s")
    for name, secs in sorted(job["timings"].items()):
        print(f"    {name:<24} {secs:8.2f}")
PY
if [[ "${KEEP:-0}" == 1 ]]; then
    echo "kept: $work"
fi
