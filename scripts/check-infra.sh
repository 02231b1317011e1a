#!/usr/bin/env bash
# Validates infra/ offline, with tools pinned from PyPI into .cache/infra-venv:
#   1. every .bicep file under infra/ parses (pycep);
#   2. checkov (Bicep resources and secrets) reports zero failed checks, no parse errors,
#      and every skipped check carries a reason;
#   3. the KEDA scale rules of the queue consumers (the workers on batches, the aggregator on
#      stitch) validate against infra/schema, each on its own queue (check_keda.py).
# Nothing here talks to Azure; a deployment cannot be checked from CI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cache/infra-venv"
# checkov 3.3.30 itself pins pycep-parser 0.5.1; both parsers must agree on the grammar.
pins=("checkov==3.3.30" "pycep-parser==0.5.1" "jsonschema==4.26.0")

stamp="$venv/.pins"
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]]; then
  echo "installing ${pins[*]} into .cache/infra-venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" > "$stamp"
fi
py="$venv/bin/python"

echo "== 1/3 parse every Bicep file (pycep)"
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

echo "== 2/3 checkov (offline: --skip-download, no platform key)"
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

echo "== 3/3 KEDA scale rules (workers, aggregator) against infra/schema"
"$py" "$root/infra/schema/check_keda.py" "$root/infra"

echo "infra checks passed"
