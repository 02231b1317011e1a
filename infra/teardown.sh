#!/usr/bin/env bash
# Removes a stylefleet deployment: the whole resource group, with every resource and role
# assignment in it. The Log Analytics workspace would otherwise stay soft-deleted for 14 days
# under its name, so it is deleted for good first (--keep-workspace keeps the soft delete).
# --dry-run prints every external call instead of running it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=infra/common.sh
source "$root/infra/common.sh"

usage() {
  cat <<'EOF'
Usage: infra/teardown.sh [options]

Deletes the resource group of a deployment and everything in it.

Options:
  -g, --resource-group NAME   resource group to delete (default: stylefleet)
      --yes                   do not ask
      --keep-workspace        let the Log Analytics workspace go to its 14-day soft delete
                              instead of deleting it for good first
      --dry-run               print every external command instead of running it
  -h, --help                  this help
EOF
}

group=stylefleet
yes=0
purge_workspace=1

while (($#)); do
  case $1 in
    -g | --resource-group) group=$2; shift 2 ;;
    --yes) yes=1; shift ;;
    --keep-workspace) purge_workspace=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

need az

if ((!yes)) && [[ $DRY_RUN != 1 ]]; then
  read -r -p "Delete resource group $group and everything in it? [y/N] " answer
  [[ $answer == [yY]* ]] || die "nothing deleted"
fi

if ! probe az group show -n "$group" && [[ $DRY_RUN != 1 ]]; then
  say "resource group $group does not exist; nothing to delete"
  exit 0
fi

if ((purge_workspace)); then
  workspace=$(capture '<workspaceName>' az deployment group show -g "$group" -n stylefleet \
    --query properties.outputs.workspaceName.value -o tsv 2>/dev/null || true)
  if [[ -n $workspace ]]; then
    run az monitor log-analytics workspace delete -g "$group" -n "$workspace" --force true --yes
  fi
fi
run az group delete -n "$group" --yes
say "deleted $group"
