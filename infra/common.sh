# shellcheck shell=bash
# Shared by infra/deploy.sh, infra/smoke.sh and infra/teardown.sh: running external commands
# (az, docker, zip, curl, ffprobe, stylefleet) so that --dry-run prints each one, with its
# arguments, instead of running it.
#
#   run CMD ARGS...             run it (print it first); under --dry-run only print it
#   capture PLACEHOLDER CMD...  run it for its standard output; under --dry-run print it and
#                               return PLACEHOLDER instead, so later commands show where it goes
#   probe CMD ARGS...           run it for its exit status only (is this already there?);
#                               under --dry-run print it and answer "no" (status 1)
#
# Every printed line starts with "+ " and goes to the original standard output (file
# descriptor 3), also from inside $(...).

DRY_RUN=${DRY_RUN:-0}
exec 3>&1

# One argument as a shell word: bare when it is plain, single-quoted otherwise.
shell_word() {
  local word=$1 plain='^[-A-Za-z0-9_@%+=:,./<>{}~]+$'
  if [[ -n $word && $word =~ $plain ]]; then
    printf '%s' "$word"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

print_command() {
  local line="+" word
  for word in "$@"; do
    line+=" $(shell_word "$word")"
  done
  printf '%s\n' "$line" >&3
}

run() {
  print_command "$@"
  if [[ $DRY_RUN == 1 ]]; then
    return 0
  fi
  "$@"
}

capture() {
  local placeholder=$1
  shift
  print_command "$@"
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s\n' "$placeholder"
    return 0
  fi
  "$@"
}

probe() {
  print_command "$@"
  if [[ $DRY_RUN == 1 ]]; then
    return 1
  fi
  "$@" >/dev/null 2>&1
}

say() {
  printf '%s\n' "$*" >&3
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Commands a real run needs on PATH; a dry run needs none of them.
need() {
  local tool
  [[ $DRY_RUN == 1 ]] && return 0
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
  done
}

# A deployment output of the main template (`az deployment group show`).
deployment_output() {
  capture "<$3>" az deployment group show -g "$1" -n "$2" \
    --query "properties.outputs.$3.value" -o tsv
}
