#!/usr/bin/env bash
# Deploys stylefleet to one Azure resource group, end to end, and can be run again at any time
# (same parameters, same result; a new commit rolls out new images).
#
#   1. pass 1: infra/main.bicep without images (network, storage, Service Bus, registry,
#      identities, roles, Functions app, Container Apps environment, monitoring);
#   2. the worker image (worker/Dockerfile) and the aggregator image (functions/Dockerfile,
#      target aggregator), built in the registry by `az acr build` (skipped when the tag exists);
#   3. the functions package: functions/Dockerfile's default target exported with Docker (the
#      handler with static ffmpeg and ffprobe beside it, host.json, splitter/), zipped and
#      published to the Flex Consumption app; then a check that the splitter function exists;
#   4. pass 2: the same template with both images and the Event Grid subscription;
#   5. only when workerCompute changed: pass 3 without previousWorkerCompute, which removes the
#      old GPU profile once the worker app has moved off it.
#
# Needs: az (2.60+, signed in, Owner or Contributor + User Access Administrator on the group),
# docker with BuildKit (for the functions package only; or give --package), zip, git, curl.
# --dry-run prints every external call with its arguments instead of running it, and needs none.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=infra/common.sh
source "$root/infra/common.sh"
# Paths below are relative to the repository root (the build context of both images).
cd "$root"

usage() {
  cat <<'EOF'
Usage: infra/deploy.sh [options]

Provisions (two passes of infra/main.bicep), builds and pushes the worker and aggregator
images (az acr build), publishes the functions package, and starts the trigger. Idempotent.

Options:
  -g, --resource-group NAME   resource group (default: stylefleet; created when missing)
  -l, --location REGION       region of a new group (default: swedencentral); it must offer
                              Flex Consumption and Container Apps serverless GPUs
      --prefix NAME           prefix of every resource name (default: stylefleet)
      --compute KIND          workerCompute: gpu-t4 (default), gpu-a100 or cpu
      --operator ID           object id of the operator (default: the signed-in user)
      --operator-type TYPE    User (default), Group or ServicePrincipal
      --operator-ip ADDR      public IPv4 address or CIDR range (/30 or wider) admitted to the
                              system account; repeatable (default: this machine's address);
                              a /32 is stripped, a /31 refused (give its two addresses)
      --no-operator-ip        admit no operator address
      --alert-email ADDR      email told of every alert (default: none)
      --tag TAG               image tag suffix (default: the commit, plus -dirty-<time> when
                              the tree has changes)
      --cuda-version X.Y.Z    CUDA_VERSION build argument of the worker image (default: the
                              Dockerfile's)
      --package ZIP           publish this functions package instead of building one
      --param NAME=VALUE      any other parameter of infra/main.bicep; repeatable
      --dry-run               print every external command instead of running it
  -h, --help                  this help
EOF
}

group=stylefleet
location=swedencentral
prefix=stylefleet
compute=gpu-t4
operator=""
operator_type=User
operator_ips=()
detect_ip=1
alert_email=""
tag=""
cuda_version=""
package=""
extra_params=()

while (($#)); do
  case $1 in
    -g | --resource-group) group=$2; shift 2 ;;
    -l | --location) location=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --compute) compute=$2; shift 2 ;;
    --operator) operator=$2; shift 2 ;;
    --operator-type) operator_type=$2; shift 2 ;;
    --operator-ip) operator_ips+=("$2"); detect_ip=0; shift 2 ;;
    --no-operator-ip) detect_ip=0; shift ;;
    --alert-email) alert_email=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --cuda-version) cuda_version=$2; shift 2 ;;
    --package) package=$2; shift 2 ;;
    --param) extra_params+=("$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case $compute in
  gpu-t4 | gpu-a100 | cpu) ;;
  *) die "--compute must be gpu-t4, gpu-a100 or cpu, not $compute" ;;
esac

need az git zip curl
[[ -n $package ]] || need docker

deployment=stylefleet
worker_app="$prefix-worker"

# Azure Storage's firewall refuses /31 and /32 prefixes: a single address goes in bare.
storage_ip_rule() {
  local value=$1
  [[ $value =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}(/[0-9]{1,2})?$ ]] || die "not an IPv4 address or range: $value"
  case $value in
    */32) printf '%s\n' "${value%/32}" ;;
    */31) die "$value: the storage firewall refuses /31 ranges; give its two addresses as two --operator-ip" ;;
    *) printf '%s\n' "$value" ;;
  esac
}

say "== stylefleet deployment: resource group $group, workerCompute $compute"
run az account show --query '{subscription:name, user:user.name}' -o table
run az group create -n "$group" -l "$location" -o none

if [[ -z $operator ]]; then
  operator=$(capture '<signed-in-user-object-id>' az ad signed-in-user show --query id -o tsv)
fi
if ((detect_ip)); then
  operator_ips+=("$(capture '<this-machine-public-ip>' curl -fsS https://api.ipify.org)")
fi
ip_json=""
for ip in "${operator_ips[@]}"; do
  if [[ $DRY_RUN == 1 && $ip == '<this-machine-public-ip>' ]]; then
    rule=$ip
  else
    rule=$(storage_ip_rule "$ip")
  fi
  ip_json+="${ip_json:+,}\"$rule\""
done

# The GPU profile the worker app runs on now: when it differs from --compute, the environment
# keeps it until the app has moved (previousWorkerCompute), and pass 3 removes it.
current_profile=$(capture '' az containerapp show -g "$group" -n "$worker_app" \
  --query properties.workloadProfileName -o tsv 2>/dev/null || true)
case $current_profile in
  NC8as-T4) previous=gpu-t4 ;;
  NC24-A100) previous=gpu-a100 ;;
  Consumption) previous=cpu ;;
  *) previous=none ;;
esac
[[ $previous == "$compute" ]] && previous=none

params=(
  "prefix=$prefix"
  "workerCompute=$compute"
  "operatorPrincipalId=$operator"
  "operatorPrincipalType=$operator_type"
  "operatorIpRanges=[$ip_json]"
  "previousWorkerCompute=$previous"
)
[[ -n $alert_email ]] && params+=("alertEmail=$alert_email")
params+=("${extra_params[@]}")

deploy_pass() {
  run az deployment group create -g "$group" -n "$deployment" -f infra/main.bicep \
    -o none -p "${params[@]}" "$@"
}

say "== 1/5 infrastructure (pass 1, no images)"
deploy_pass

registry=$(deployment_output "$group" "$deployment" registryName)
function_app=$(deployment_output "$group" "$deployment" functionAppName)

say "== 2/5 images, built in the registry"
if [[ -z $tag ]]; then
  tag=$(git rev-parse --short HEAD)
  if [[ -n $(git status --porcelain) ]]; then
    tag+="-dirty-$(date -u +%Y%m%d%H%M%S)"
  fi
fi
if [[ $compute == cpu ]]; then
  worker_image="stylefleet-worker:cpu-$tag"
  worker_args=(--build-arg VARIANT=cpu)
else
  worker_image="stylefleet-worker:cuda-$tag"
  worker_args=()
  [[ -n $cuda_version ]] && worker_args+=(--build-arg "CUDA_VERSION=$cuda_version")
fi
aggregator_image="stylefleet-aggregator:agg-$tag"

if probe az acr repository show -n "$registry" --image "$worker_image"; then
  say "$worker_image is in $registry already"
else
  run az acr build -r "$registry" -t "$worker_image" -f worker/Dockerfile \
    "${worker_args[@]}" .
fi
if probe az acr repository show -n "$registry" --image "$aggregator_image"; then
  say "$aggregator_image is in $registry already"
else
  run az acr build -r "$registry" -t "$aggregator_image" --target aggregator \
    -f functions/Dockerfile .
fi

say "== 3/5 functions package (splitter)"
if [[ -z $package ]]; then
  work=$(capture '<work-dir>' mktemp -d)
  # The default target of functions/Dockerfile is the package's files: the handler, ffmpeg
  # and ffprobe beside it, host.json and splitter/. zip keeps their execute bits.
  run env DOCKER_BUILDKIT=1 docker build -f functions/Dockerfile \
    --output "type=local,dest=$work/pkg" .
  run bash -c 'cd "$1" && zip -qr "$2" .' zip "$work/pkg" "$work/functions.zip"
  package="$work/functions.zip"
fi
run az functionapp deployment source config-zip -g "$group" -n "$function_app" --src "$package" -o none
functions=""
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  functions=$(capture 'splitter' az functionapp function list -g "$group" -n "$function_app" \
    --query '[].name' -o tsv)
  [[ $functions == *splitter* ]] && break
  say "splitter not listed yet (attempt $attempt); waiting 15 s"
  sleep 15
done
[[ $functions == *splitter* ]] || die "the splitter function did not appear in $function_app; see its FunctionAppLogs"

say "== 4/5 workers, aggregator and trigger (pass 2)"
deploy_pass "workerImage=$worker_image" "aggregatorImage=$aggregator_image" subscribeSplitter=true

if [[ $previous != none ]]; then
  say "== 5/5 remove the $previous profile the worker left (pass 3)"
  params=("${params[@]/previousWorkerCompute=*/previousWorkerCompute=none}")
  deploy_pass "workerImage=$worker_image" "aggregatorImage=$aggregator_image" subscribeSplitter=true
else
  say "== 5/5 no workload profile to remove"
fi

store=$(deployment_output "$group" "$deployment" storeUrl)
say "deployed: images $worker_image and $aggregator_image, function app $function_app"
say "STYLEFLEET_STORE=$store; next: infra/smoke.sh -g $group"
