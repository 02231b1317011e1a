#!/usr/bin/env bash
# Peak memory of moving a video of at least 1 GiB between a file and the store: Store::upload
# (create-only, the way the aggregator writes an output, and overwrite, the way a chunk is written)
# and Store::download, to and from Azurite and a local folder, against the way before (the file
# read whole, then put_create) in the same run. Each transfer runs in a process of its own
# (examples/transfer_memory.rs) and reports that process's peak resident set (VmHWM).
#
# In the local folder the video sits where the aggregator stitches, in scratch space inside the
# data folder (a create-only upload links it); "local-upload-copy" uploads the same file through
# a name outside the folder, the way `process` stores a user's video (it is copied).
#
# The video: 10 s of ffmpeg's testsrc2 at 1920x1080, 30 fps, lossless x264 (ultrafast, -qp 0),
# looped with a stream copy until it reaches SIZE_MIB (a valid mp4).
#
# Usage: scripts/bench-transfer-memory.sh
# Environment: SIZE_MIB (default 1100), PROFILE=release to measure a release build (default: the
# dev build the tests use). Everything lives in a temporary folder, deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib="${SIZE_MIB:-1100}"
profile="${PROFILE:-dev}"
if [[ "$profile" == release ]]; then
    cargo build --quiet --release --example transfer_memory
    bin=target/release/examples/transfer_memory
else
    cargo build --quiet --example transfer_memory
    bin=target/debug/examples/transfer_memory
fi
source scripts/bench-common.sh stylefleet-bench
echo "making a video of at least $size_mib MiB in $work"
ffmpeg -hide_banner -nostdin -v error -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 10 \
    -c:v libx264 -preset ultrafast -qp 0 -pix_fmt yuv420p "$work/clip.mp4"
clip_bytes="$(stat -c %s "$work/clip.mp4")"
loops=$(( (size_mib * 1048576 + clip_bytes - 1) / clip_bytes - 1 ))
ffmpeg -hide_banner -nostdin -v error -stream_loop "$loops" -i "$work/clip.mp4" -c copy \
    -f mp4 "$work/video.mp4"
rm "$work/clip.mp4"
mkdir -p "$work/data/scratch/stitch"
video="$work/data/scratch/stitch/video.mp4"
mv "$work/video.mp4" "$video"
outside="$work/outside.mp4"
ln "$video" "$outside"
bytes="$(stat -c %s "$video")"
echo "video: $bytes bytes ($(( bytes / 1048576 )) MiB), $(ffprobe -v error -select_streams v:0 \
    -show_entries stream=codec_name,width,height,nb_frames -of csv=p=0 "$video")"

start_azurite
export AZURE_STORAGE_USE_EMULATOR=true
export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$port"
export AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1
azure="az://bench"
local="$work/data"
scratch="$work/data/scratch"

declare -A peak
# run <label> <transfer_memory arguments...>: prints the command and its line, keeps the peak.
run() {
    local label="$1"
    shift
    echo "\$ $bin $*"
    local line
    line="$("$bin" "$@")"
    echo "  $line"
    peak[$label]="$(sed -E 's/.*peak_rss_kib=([0-9]+).*/\1/' <<<"$line")"
}
# check <file>: the bytes came back whole; then the copy goes.
check() {
    cmp "$video" "$1"
    rm "$1"
}

run azure-upload upload "$azure" "$video" output/s/video.mp4
run azure-download download "$azure" output/s/video.mp4 "$scratch/azure.mp4"
check "$scratch/azure.mp4"
run azure-whole whole-upload "$azure" "$video" output/s/whole.mp4
run local-upload upload "$local" "$video" output/s/video.mp4
run local-upload-copy upload "$local" "$outside" input/s/video.mp4
run local-overwrite overwrite "$local" "$video" jobs/j/chunks/00000.mp4
run local-download download "$local" output/s/video.mp4 "$scratch/local.mp4"
check "$scratch/local.mp4"
run local-whole whole-upload "$local" "$video" output/s/whole.mp4

mib() { awk -v k="$1" 'BEGIN { printf "%7.1f MiB", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo
echo "peak RSS for $(( bytes / 1048576 )) MiB:"
for label in azure-upload azure-download azure-whole local-upload local-upload-copy \
    local-overwrite local-download local-whole; do
    printf '  %-18s %s\n' "$label" "$(mib "${peak[$label]}")"
done
echo "  new/old, Azure create-only upload:  $(ratio "${peak[azure-upload]}" "${peak[azure-whole]}")"
echo "  new/old, local create-only upload:  $(ratio "${peak[local-upload]}" "${peak[local-whole]}")"
echo "  new/old, local create-only copy:    $(ratio "${peak[local-upload-copy]}" "${peak[local-whole]}")"
echo "  new/old, local overwrite upload:    $(ratio "${peak[local-overwrite]}" "${peak[local-whole]}")"
