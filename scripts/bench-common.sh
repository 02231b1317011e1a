# shellcheck shell=bash
# Shared by the memory benchmarks (sourced, not run): a temporary work folder removed on exit with
# the Azurite it started, the machine's size, and `start_azurite`, which sets `port` and
# `azurite_pid` for an Azurite blob service on 127.0.0.1 with its data under the work folder.
# Usage: `source scripts/bench-common.sh <name>`; then "$work" is the work folder.

azurite_bin=node_modules/.bin/azurite-blob
[[ -x "$azurite_bin" ]] || { echo "Azurite is missing: run scripts/install-deps.sh" >&2; exit 1; }

work="$(mktemp -d -t "$1.XXXXXX")"
azurite_pid=
cleanup() {
    [[ -n "$azurite_pid" ]] && kill "$azurite_pid" 2>/dev/null && wait "$azurite_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory"

start_azurite() {
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$azurite_bin" --blobHost 127.0.0.1 --blobPort "$port" --location "$work/azurite" --silent \
        --skipApiVersionCheck --loose --disableTelemetry >"$work/azurite.log" 2>&1 &
    azurite_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
}
