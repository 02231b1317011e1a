#!/usr/bin/env bash
# The overlapped worker, measured end to end: `stylefleet process` on the Big Buck Bunny clip
# scaled to 640x360 (132 frames, audio kept), 2 workers, with each worker taking one batch at a
# time (STYLEFLEET_IN_FLIGHT=1: receive, decode, style, encode, upload in turn) and two (the
# default: the next batch is decoded and the previous one encoded and uploaded while one is
# styled). The runs alternate, each setting `rounds` times, and the fastest of each counts (the
# machines are shared); prints both and the ratio.
#
# Usage: scripts/bench-in-flight.sh [rounds] [style]      (default: 2 rounds, style 0)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-2}"
style="${2:-0}"
bash scripts/fetch-footage.sh >/dev/null
work="$(mktemp -d -t stylefleet-in-flight.XXXXXX)"
trap 'rm -rf "$work"' EXIT
clip="$work/bbb-360p.mp4"
ffmpeg -v error -i .cache/footage/bigbuckbunny.mp4 -vf scale=640:360 -c:v libx264 -crf 18 \
    -c:a copy "$clip"
cargo build --quiet --workspace --bin stylefleet
bin=target/debug/stylefleet
echo "machine: $(nproc) cores; clip: 640x360, $(ffprobe -v error -count_packets \
    -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$clip") frames; style $style"

declare -A best=()
for round in $(seq "$rounds"); do
    for n in 1 2; do
        data="$work/data-$n-$round"
        start=$(date +%s.%N)
        STYLEFLEET_IN_FLIGHT=$n "$bin" process "$clip" --style "$style" --workers 2 --quiet \
            --data "$data" -o "$work/out-$n-$round.mp4" >/dev/null 2>"$work/log-$n-$round"
        end=$(date +%s.%N)
        secs=$(python3 -c "print(f'{$end - $start:.2f}')")
        echo "round $round, in flight $n: $secs s"
        best[$n]=$(python3 -c "print(min($secs, ${best[$n]:-1e9}))")
        rm -rf "$data"
    done
done
python3 - "${best[1]}" "${best[2]}" <<'PY'
import sys
one, two = map(float, sys.argv[1:])
print(f"fastest: one at a time {one:.2f} s, two in flight {two:.2f} s; ratio {two / one:.2f}")
PY
