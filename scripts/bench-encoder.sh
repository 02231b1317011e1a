#!/usr/bin/env bash
# The chunk encoder's choice, measured: the network's real output at 1280x720 (the first frames of
# the Big Buck Bunny clip, styled uncompressed by examples/style_raw.rs), encoded by x264 at
# several presets and CRFs on one thread. For each: frames/s, size, and PSNR of the decoded chunk
# against the uncompressed styled frames (both as yuv420p, so only the encoder's loss counts),
# with the ratio against today's default measured in the same run, and whether it keeps quality
# within 0.5 dB and size within 1.35x of it. Each encode runs three times and the fastest counts
# (the machines are shared: the slower runs measure the neighbours). The styled frames are kept
# in .cache/bench-encoder/ for the next run (styling them takes minutes on a CPU).
#
# Usage: scripts/bench-encoder.sh [frames] [style]      (default: 60 frames, style 0)
set -euo pipefail
cd "$(dirname "$0")/.."

frames="${1:-60}"
style="${2:-0}"
bash scripts/fetch-footage.sh >/dev/null
clip=.cache/footage/bigbuckbunny.mp4
work="$(mktemp -d -t stylefleet-encoder.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores; clip: $clip, first $frames frames at 1280x720, style $style"

styled=".cache/bench-encoder/styled-$style-$frames.rgb"
if [[ ! -s "$styled" ]]; then
    mkdir -p .cache/bench-encoder
    cargo build --quiet --workspace --example style_raw
    ffmpeg -v error -i "$clip" -frames:v "$frames" -vf scale=1280:720 -f rawvideo -pix_fmt rgb24 - \
        | target/debug/examples/style_raw 1280 720 "$style" > "$styled.partial"
    mv "$styled.partial" "$styled"
fi

# candidate: preset crf
candidates=(
    "medium 18"
    "fast 17"
    "faster 16"
    "faster 17"
    "veryfast 18"
    "veryfast 17"
    "veryfast 16"
    "veryfast 15"
    "superfast 15"
    "superfast 14"
    "ultrafast 12"
)
printf '%-14s %8s %8s %10s %7s %8s %8s  %s\n' candidate "fps" "x speed" bytes "x size" "PSNR" "dB diff" verdict
base_fps='' base_bytes='' base_psnr=''
for c in "${candidates[@]}"; do
    read -r preset crf <<<"$c"
    out="$work/$preset-$crf.mp4"
    best=''
    for _ in 1 2 3; do
        start=$(date +%s.%N)
        ffmpeg -v error -y -f rawvideo -pix_fmt rgb24 -s 1280x720 -framerate 25 -i "$styled" \
            -c:v libx264 -preset "$preset" -crf "$crf" -threads 1 -pix_fmt yuv420p -an "$out"
        end=$(date +%s.%N)
        best=$(python3 -c "print(min(x for x in [$end - $start, ${best:-1e9}]))")
    done
    bytes=$(stat -c %s "$out")
    psnr=$(ffmpeg -v info -i "$out" -f rawvideo -pix_fmt rgb24 -s 1280x720 -framerate 25 \
        -i "$styled" \
        -lavfi '[0:v]format=yuv420p[a];[1:v]format=yuv420p[b];[a][b]psnr' -f null - 2>&1 \
        | sed -n 's/.*PSNR.* average:\([0-9.inf]*\).*/\1/p' | tail -1)
    fps=$(python3 -c "print(f'{$frames / $best:.1f}')")
    if [[ -z "$base_fps" ]]; then base_fps=$fps base_bytes=$bytes base_psnr=$psnr; fi
    read -r speed size diff verdict < <(python3 - "$fps" "$bytes" "$psnr" "$base_fps" "$base_bytes" "$base_psnr" <<'PY'
import sys
fps, b, p, bf, bb, bp = map(float, sys.argv[1:])
size = b / bb
diff = p - bp
ok = diff >= -0.5 and size <= 1.35
print(f"{fps / bf:.2f} {size:.2f} {diff:+.2f} {'within' if ok else 'outside'}")
PY
)
    printf '%-14s %8s %8s %10s %7s %8s %8s  %s\n' "$preset/$crf" "$fps" "$speed" "$bytes" "$size" "$psnr" "$diff" "$verdict"
done
echo "within: PSNR at most 0.5 dB under medium/18 and size at most 1.35x; x speed is frames/s against medium/18 in this run"
