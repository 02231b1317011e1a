#!/usr/bin/env bash
# Temporal stability of the styled video: flicker of source, per-frame styling and stabilised
# output, warping error, ghosting, style kept, seams, and the cost of flow + blend against the
# network, on real footage (the Big Buck Bunny excerpt, scaled to 640x360, and at 720p for the
# cost) and on a clip made with ffmpeg (still test pattern with sensor noise). The measuring half
# is examples/temporal_bench.rs, which says what each row means; it prints one table per clip.
#
# Usage: scripts/bench-temporal.sh [style]
# Environment: PROFILE (default dev; `release` measures the cost as the shipped binaries run:
# the dev profile compiles this crate at opt-level 1), STRENGTH (default: the pipeline's),
# FRAMES_720P (default 24: frames for the 720p cost row), STRIP (default bench/results/temporal-strip.jpg: a before/after strip of a moving
# scene; empty to skip). Work files live in a temporary folder, deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

style="${1:-0}"
strength=()
[[ -n "${STRENGTH:-}" ]] && strength=(--strength "$STRENGTH")
frames_720p="${FRAMES_720P:-24}"
strip="${STRIP-bench/results/temporal-strip.jpg}"

scripts/fetch-footage.sh >/dev/null
if [[ "${PROFILE:-dev}" == release ]]; then
    cargo build --quiet --release -p stylefleet --example temporal_bench
    bench=target/release/examples/temporal_bench
else
    cargo build --quiet --workspace --example temporal_bench
    bench=target/debug/examples/temporal_bench
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/stylefleet-temporal.XXXXXX")"
trap 'rm -rf "$work"' EXIT

bbb=.cache/footage/bigbuckbunny.mp4
ffmpeg -hide_banner -nostdin -v error -i "$bbb" -vf scale=640:360 -an -c:v libx264 -crf 16 \
    -preset fast "$work/bbb-360p.mp4"
ffmpeg -hide_banner -nostdin -v error -f lavfi \
    -i "testsrc2=size=640x360:rate=25,noise=alls=8:allf=t" -frames:v 100 -c:v libx264 -crf 16 \
    -preset fast -pix_fmt yuv420p "$work/pattern-360p.mp4"

echo "\$ $bench bbb-360p.mp4 --style $style ${strength[*]} --strip ... --strip-at 96"
"$bench" "$work/bbb-360p.mp4" --style "$style" "${strength[@]}" --strip "$work/strip" --strip-at 96
echo
echo "\$ $bench pattern-360p.mp4 --style $style ${strength[*]}"
"$bench" "$work/pattern-360p.mp4" --style "$style" "${strength[@]}"
echo
echo "\$ $bench bigbuckbunny.mp4 (720p) --style $style ${strength[*]} --frames $frames_720p"
"$bench" "$bbb" --style "$style" "${strength[@]}" --frames "$frames_720p"

if [[ -n "$strip" ]]; then
    # Rows: source, per-frame, stabilised; columns: four consecutive frames, half size.
    for r in source perframe stabilised; do
        ffmpeg -hide_banner -nostdin -v error -y -start_number 96 -i "$work/strip/$r-%04d.png" \
            -vf "scale=320:180,tile=4x1" -frames:v 1 "$work/row-$r.png"
    done
    ffmpeg -hide_banner -nostdin -v error -y -i "$work/row-source.png" -i "$work/row-perframe.png" \
        -i "$work/row-stabilised.png" -filter_complex vstack=inputs=3 -q:v 6 "$strip"
    echo "strip (rows: source, per-frame, stabilised; frames 96-99): $strip"
fi
