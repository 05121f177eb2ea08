# shellcheck shell=bash disable=SC2034 # sourced; the tests use what it sets
# Shared by the multinode tests (sourced): paths, the skip rule, checks.
# Environment (tests/CMakeLists.txt): ALEXNET_SOURCE_DIR, ALEXNET_BIN_DIR, and
# OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM), which Open MPI needs when CI runs as root.
set -euo pipefail

src=${ALEXNET_SOURCE_DIR:?ALEXNET_SOURCE_DIR is not set (run through ctest)}
bin=${ALEXNET_BIN_DIR:?ALEXNET_BIN_DIR is not set (run through ctest)}
cluster=$src/launch/emulated-cluster
agent=$src/launch/netns-agent
train=$bin/alexnet-train
# A prefix of our own, so that tests running at the same time never meet.
prefix=anet-t$$
scratch=$(mktemp -d "${TMPDIR:-/tmp}/multinode-test.XXXXXX")
failures=0

# The emulated cluster needs network namespaces (root, or CAP_SYS_ADMIN and
# CAP_NET_ADMIN): where it cannot be built, the test is skipped (ctest
# SKIP_RETURN_CODE 77) with the reason.
require_cluster() {
  local why
  if ! why=$("$cluster" --check 2>&1); then
    echo "SKIP: the emulated cluster cannot run here: $why"
    rm -rf "$scratch"
    exit 77
  fi
}

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }
# check WHAT COMMAND...: WHAT holds if COMMAND succeeds.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

# expect_match NAME TEXT REGEX: TEXT matches the extended REGEX.
expect_match() {
  if grep -Eq -- "$3" <<< "$2"; then pass "$1"; else fail "$1: no line matching /$3/ in:"$'\n'"$2"; fi
}

# Nothing of the prefix may be left: namespaces, their /etc/netns files, or a
# process whose command line names this test's scratch directory (or holds
# the optional second argument).
expect_no_leftovers() {
  local what=$1 mark=${2:-$scratch} ns p pids='' cmdline
  ns=$(ip netns list | awk '{print $1}' | grep -E "^$prefix-(sw|h[0-9]+)$" || true)
  [ -z "$ns" ] || fail "$what: namespaces left behind: $(echo "$ns" | tr '\n' ' ')"
  if compgen -G "/etc/netns/$prefix-*" > /dev/null; then fail "$what: /etc/netns/$prefix-* left behind"; fi
  for p in /proc/[0-9]*; do  # builtins only: no process of ours joins the list
    mapfile -d '' cmdline 2>/dev/null < "$p/cmdline" || continue
    if [[ "${cmdline[*]}" == *"$scratch"* || "${cmdline[*]}" == *"$mark"* ]]; then pids+=" ${p#/proc/}"; fi
  done
  [ -z "$pids" ] || fail "$what: processes still running:$pids"
  [ -n "$ns$pids" ] || pass "$what: no namespace or process left"
}

finish() {
  "$cluster" --cleanup "$prefix" > /dev/null 2>&1 || true
  rm -rf "$scratch"
  if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed"
    exit 1
  fi
  echo "all checks passed"
}

# Where the newest checkpoint of a run directory is (empty if none).
newest_checkpoint() {
  find "$1/checkpoints" -name 'step-*.h5' 2>/dev/null | sort | tail -n 1
}
