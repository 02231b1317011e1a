#!/usr/bin/env bash
# The main job on the embedded default: style the Big Buck Bunny clip (5.3 s, 1280x720, 25 fps,
# AAC 5.1; film (c) Blender Foundation, CC BY 3.0) with a built-in style, frame-exact, audio kept.
# Usage: scripts/demo.sh [style] [extra `stylefleet process` options]
set -euo pipefail
cd "$(dirname "$0")/.."
STYLEFLEET_WITH_AZURITE=0 STYLEFLEET_WITH_TEST_TOOLS=0 bash scripts/install-deps.sh
cargo build --release --quiet --bin stylefleet
style="${1:-0}"
shift || true
mkdir -p stylefleet-data/demo
out="stylefleet-data/demo/bigbuckbunny.styled.mp4"
rm -f "$out"
./target/release/stylefleet process .cache/footage/bigbuckbunny.mp4 --style "$style" -o "$out" "$@"
echo "styled video: $(pwd)/$out"
