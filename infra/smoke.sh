#!/usr/bin/env bash
# End-to-end check of a deployment, the way an outside user meets it:
#
#   1. mint an upload URL (`stylefleet sas upload`: a user delegation SAS for one blob under
#      input/) and upload the Big Buck Bunny clip with it (`az storage blob upload --blob-url`);
#   2. wait for the first styled chunk under jobs/ (time to first output: Event Grid, the
#      splitter, a GPU worker's cold start and its first batch) and for the output video;
#   3. mint a download URL (`stylefleet sas download`) and download the output with it;
#   4. verify it frame-exact with ffprobe: as many video frames as the source.
#
# Prints the time to first output and the total. Needs: az (signed in as the operator the
# deployment granted), the stylefleet CLI, ffprobe; the clip comes from
# scripts/fetch-footage.sh. --dry-run prints every external call instead of running it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=infra/common.sh
source "$root/infra/common.sh"
cd "$root"

usage() {
  cat <<'EOF'
Usage: infra/smoke.sh [options]

Uploads a clip through a user delegation SAS, waits for the styled output, downloads it
through another SAS and checks it has exactly the source's frames. Prints the time to the
first styled chunk (cold start included) and the total.

Options:
  -g, --resource-group NAME   resource group of the deployment (default: stylefleet)
      --clip FILE             video to send (default: the Big Buck Bunny clip of
                              scripts/fetch-footage.sh, .cache/footage/bigbuckbunny.mp4)
      --style NAME            built-in style, the folder under input/ (default: starry-blue)
      --timeout SECONDS       give up after this long (default: 1800)
      --stylefleet PATH       the stylefleet CLI (default: stylefleet on PATH)
      --dry-run               print every external command instead of running it
  -h, --help                  this help
EOF
}

group=stylefleet
clip=.cache/footage/bigbuckbunny.mp4
style=starry-blue
timeout=1800
stylefleet=stylefleet

while (($#)); do
  case $1 in
    -g | --resource-group) group=$2; shift 2 ;;
    --clip) clip=$2; shift 2 ;;
    --style) style=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --stylefleet) stylefleet=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

need az ffprobe "$stylefleet"
deployment=stylefleet

if [[ ! -s $clip && $clip == .cache/footage/bigbuckbunny.mp4 ]]; then
  run bash scripts/fetch-footage.sh
fi
[[ $DRY_RUN == 1 || -s $clip ]] || die "no clip at $clip"

store=$(deployment_output "$group" "$deployment" storeUrl)
account=$(deployment_output "$group" "$deployment" dataAccountName)
export STYLEFLEET_STORE=$store AZURE_USE_AZURE_CLI=true

count_frames() {
  capture '<frames>' ffprobe -v error -select_streams v:0 -count_frames \
    -show_entries stream=nb_read_frames -of csv=p=0 "$1"
}

name="smoke-$(date -u +%Y%m%d%H%M%S).mp4"
blob="input/$style/$name"
output="output/$style/$name"
source_frames=$(count_frames "$clip")
say "== sending $clip ($source_frames frames) as $blob"

start=$(date +%s)
start_iso=$(date -u +%Y-%m-%dT%H:%M:%S)
upload_url=$(capture '<upload-sas-url>' "$stylefleet" sas upload "$blob" --ttl-minutes 60)
run az storage blob upload --blob-url "$upload_url" --file "$clip" --type block --only-show-errors -o none

# The first styled chunk of this job: a chunk created after the upload started.
say "== waiting for the first styled chunk and for $output (at most $timeout s)"
first=""
total=""
while :; do
  now=$(date +%s)
  if [[ -z $first ]]; then
    chunks=$(capture '1' az storage blob list --auth-mode login --account-name "$account" -c jobs \
      --num-results '*' --only-show-errors \
      --query "length([?contains(name, '/chunks/') && properties.creationTime >= '$start_iso'])" -o tsv)
    if [[ ${chunks:-0} -gt 0 ]]; then
      first=$((now - start))
      say "first styled chunk after ${first} s"
    fi
  fi
  done_flag=$(capture 'true' az storage blob exists --auth-mode login --account-name "$account" \
    -c output -n "$style/$name" --query exists -o tsv)
  if [[ $done_flag == true ]]; then
    total=$((now - start))
    say "output after ${total} s"
    break
  fi
  if ((now - start > timeout)); then
    run "$stylefleet" status || true
    die "no output after $timeout s; the job's status is above"
  fi
  sleep 10
done

say "== downloading and checking $output"
download_url=$(capture '<download-sas-url>' "$stylefleet" sas download "$output" --ttl-minutes 60)
work=$(capture '<work-dir>' mktemp -d)
run az storage blob download --blob-url "$download_url" --file "$work/$name" --only-show-errors -o none
output_frames=$(count_frames "$work/$name")

say "source frames: $source_frames, output frames: $output_frames"
[[ $source_frames == "$output_frames" ]] || die "frame count differs: $source_frames in, $output_frames out"
say "smoke test passed: time to first output ${first:-?} s, total ${total} s"
