#!/usr/bin/env bash
# Peak memory of the aggregator's stitch of an output of at least 1 GiB, on a local folder and on
# Azurite, against its peer in the same run: the same output uploaded the way the aggregator did
# before (the file read whole, then put_create). Each step runs in a process of its own
# (examples/stitch_memory.rs, examples/transfer_memory.rs), which reports its peak resident set
# (VmHWM); ffmpeg and ffprobe run in processes of their own and are not counted.
#
# The job: a lossless 640x360 noise video (so the chunks and the output are as large as the
# source) looped to SIZE_MIB, planned by the splitter into batches of BATCH frames whose chunks
# are encoded unstyled (the network plays no part in a stitch). On Azurite the stitch downloads
# every chunk and the pinned source (the scratch cache is emptied first) and uploads the output in
# parts.
#
# Usage: scripts/bench-stitch-memory.sh
# Environment: SIZE_MIB (default 1100), BATCH (default 250). Everything lives in a temporary
# folder, deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib="${SIZE_MIB:-1100}"
batch="${BATCH:-250}"
cargo build --quiet --example stitch_memory --example transfer_memory
stitch_bin=target/debug/examples/stitch_memory
transfer_bin=target/debug/examples/transfer_memory
source scripts/bench-common.sh stylefleet-stitch-bench
echo "making a video of at least $size_mib MiB in $work"
ffmpeg -hide_banner -nostdin -v error -f lavfi -i "nullsrc=size=640x360:rate=25,geq=random(1)*255:128:128" \
    -frames:v 250 -c:v libx264 -preset ultrafast -qp 0 -pix_fmt yuv420p "$work/clip.mp4"
clip_bytes="$(stat -c %s "$work/clip.mp4")"
loops=$(( (size_mib * 1048576 + clip_bytes - 1) / clip_bytes - 1 ))
ffmpeg -hide_banner -nostdin -v error -stream_loop "$loops" -i "$work/clip.mp4" -c copy \
    -f mp4 "$work/video.mp4"
rm "$work/clip.mp4"
echo "source: $(stat -c %s "$work/video.mp4") bytes, $(ffprobe -v error -select_streams v:0 \
    -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$work/video.mp4") frames"

start_azurite
azure_env=(AZURE_STORAGE_USE_EMULATOR=true "AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$port"
    AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1 STYLEFLEET_STORE=az://stitchbench)

declare -A peak
declare -A size
# stitch <label> <data> [env...]: prepares the job, stitches it, keeps the peak and the size.
stitch() {
    local label="$1" data="$2"
    shift 2
    echo "\$ $stitch_bin prepare $data video.mp4 $batch   ($label)"
    env "$@" "$stitch_bin" prepare "$data" "$work/video.mp4" "$batch" | sed 's/^/  /'
    rm -rf "$data/scratch/sources"
    echo "\$ $stitch_bin stitch $data   ($label)"
    local line
    line="$(env "$@" "$stitch_bin" stitch "$data")"
    echo "  $line"
    peak[$label]="$(sed -E 's/.*peak_rss_kib=([0-9]+).*/\1/' <<<"$line")"
    size[$label]="$(sed -E 's/.*output_bytes=([0-9]+).*/\1/' <<<"$line")"
}

stitch local "$work/local"
output="$(find "$work/local/output" -name '*.mp4' | head -1)"
stitch azure "$work/azure" "${azure_env[@]}"

echo "\$ $transfer_bin whole-upload (the peer: the output read whole, then put_create, to Azurite)"
line="$(env "${azure_env[@]}" "$transfer_bin" whole-upload az://stitchbench "$output" output/peer/whole.mp4)"
echo "  $line"
peak[peer]="$(sed -E 's/.*peak_rss_kib=([0-9]+).*/\1/' <<<"$line")"

mib() { awk -v k="$1" 'BEGIN { printf "%7.1f MiB", k / 1024 }'; }
echo
# shellcheck disable=SC2004 # size is an associative array: its key is spelled out
echo "peak RSS of the stitch process, output of $(( ${size[local]} / 1048576 )) MiB:"
echo "  local folder            $(mib "${peak[local]}")"
echo "  Azurite                 $(mib "${peak[azure]}")"
echo "  peer (whole-file put)   $(mib "${peak[peer]}")"
awk -v a="${peak[azure]}" -v b="${peak[peer]}" 'BEGIN { printf "  Azurite stitch / peer:  %.3f\n", a / b }'
