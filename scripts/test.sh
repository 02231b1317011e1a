#!/usr/bin/env bash
# Every check and test of the workspace, as CI runs it: the offline infrastructure checks, the
# Dockerfile lint, formatting, clippy (warnings are errors), then all tests with real ffmpeg,
# SQLite, Azurite and model weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/check-infra.sh
bash scripts/lint-dockerfiles.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy -p stylefleet --no-default-features --all-targets --quiet -- -D warnings
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast
fi
