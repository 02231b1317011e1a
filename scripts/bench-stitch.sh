#!/usr/bin/env bash
# The aggregator's stitch, phase by phase, old code against new in the same run: Big Buck Bunny
# (film (c) Blender Foundation, CC BY 3.0; 1280x720, 132 frames, AAC 5.1) planned in batches of
# BATCH frames with temporal stabilisation on and off, every chunk written unstyled
# (examples/stitch_bench.rs), then stitched ROUNDS times by each build in turn (A, B, A, B, ...),
# each run on a fresh copy of the prepared data folder. Prints one JSON line per run (wall time
# and the phases the stitch records: fetch, join or stabilise, verify, upload) and the median
# per build with the ratio B/A.
#
# Usage: scripts/bench-stitch.sh <dir of build A's stitch_bench> <dir of build B's stitch_bench>
# Environment: ROUNDS (default 5), BATCH (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."

a="$1/stitch_bench"
b="$2/stitch_bench"
rounds="${ROUNDS:-5}"
batch="${BATCH:-16}"
bash scripts/fetch-footage.sh >/dev/null
source=.cache/footage/bigbuckbunny.mp4
work="$(mktemp -d -t stylefleet-stitch.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A: $a"
echo "B: $b"

results="$work/results.jsonl"
for temporal in off on; do
    "$a" prepare "$work/prepared-$temporal" "$source" "$batch" "$temporal"
    for round in $(seq "$rounds"); do
        for build in A B; do
            bin=$a
            [[ $build == B ]] && bin=$b
            rm -rf "$work/run"
            cp -a "$work/prepared-$temporal" "$work/run"
            line=$("$bin" stitch "$work/run")
            echo "$build round $round: $line"
            echo "$line" | python3 -c "import json, sys; r = json.loads(sys.stdin.read()); r['build'] = '$build'; print(json.dumps(r))" >>"$results"
        done
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| temporal | build | runs | wall s (median) | " + " | ".join(["fetch", "join/stabilise", "verify", "upload", "in stabilise: filter", "probes", "join"]) + " |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for temporal in (False, True):
    med = {}
    for build in ("A", "B"):
        rs = [r for r in rows if r["temporal"] == temporal and r["build"] == build]
        if not rs:
            continue
        m = lambda key: statistics.median(r["phases"].get(key, 0.0) for r in rs)
        wall = statistics.median(r["seconds"] for r in rs)
        join = m("stitch_stabilise") if temporal else m("stitch_join")
        med[build] = (wall, m("stitch_fetch"), join, m("stitch_verify"), m("stitch_upload"),
                      m("stitch_stabilise_filter"), m("stitch_stabilise_probe"), m("stitch_stabilise_join"))
        print(f"| {'on' if temporal else 'off'} | {build} | {len(rs)} | " + " | ".join(f"{x:.3f}" for x in med[build]) + " |")
    if len(med) == 2:
        ratios = [b / a if a > 0 else float("nan") for a, b in zip(med["A"], med["B"])]
        print(f"| {'on' if temporal else 'off'} | B/A | | " + " | ".join(f"{x:.2f}" for x in ratios) + " |")
PY
