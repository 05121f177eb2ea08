#!/usr/bin/env bash
# launch/emulated-cluster and launch/netns-agent: every message they print for
# bad input, their exit statuses, the refusal to reuse namespaces, --cleanup,
# and the teardown on SIGINT and SIGTERM.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
require_cluster
trap finish EXIT

# expect_fail NAME STATUS REGEX COMMAND...: COMMAND exits with STATUS and
# prints a line matching REGEX.
expect_fail() {
  local name=$1 want=$2 re=$3 out rc=0
  shift 3
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" != "$want" ]; then
    fail "$name: exit status $rc, expected $want; output:"$'\n'"$out"
  else
    expect_match "$name" "$out" "$re"
  fi
}

c=$cluster
e="^emulated-cluster: "
expect_fail "no --hosts" 2 "$e--hosts is required$" "$c" -- true
expect_fail "usage shown" 2 "^usage: emulated-cluster --hosts K " "$c" -- true
expect_fail "--hosts 0" 2 "$e--hosts '0' must be a whole number in \[1, 200\]$" "$c" --hosts 0 -- true
expect_fail "--hosts x" 2 "$e--hosts 'x' must be a whole number in \[1, 200\]$" "$c" --hosts x -- true
expect_fail "--hosts without value" 2 "$e--hosts needs a value$" "$c" --hosts
expect_fail "--ranks-per-host 0" 2 \
  "$e--ranks-per-host '0' must be a whole number in \[1, 256\]$" "$c" --hosts 2 --ranks-per-host 0 -- true
expect_fail "--bandwidth 1gb" 2 \
  "$e--bandwidth '1gb' is not a rate: use e.g. 100mbit, 1gbit, 10gbit, or none$" "$c" --hosts 2 --bandwidth 1gb -- true
expect_fail "--latency 1" 2 \
  "$e--latency '1' is not a time: use e.g. 0, 200us, 1ms$" "$c" --hosts 2 --latency 1 -- true
expect_fail "--grace -1" 2 "$e--grace '-1' is not a whole number of seconds$" "$c" --hosts 2 --grace -1 -- true
expect_fail "--tcp-retries 0" 2 \
  "$e--tcp-retries '0' must be a whole number in \[1, 15\]$" "$c" --hosts 2 --tcp-retries 0 -- true
expect_fail "--prefix Bad_Name" 2 \
  "${e}prefix 'Bad_Name' must be 1-40 characters of a-z, 0-9 and '-', starting with a letter$" \
  "$c" --hosts 2 --prefix Bad_Name -- true
expect_fail "unknown option" 2 "${e}unknown option '--frob'$" "$c" --frob
expect_fail "no command" 2 "${e}no command after --$" "$c" --hosts 2
out=$("$c" --help 2>&1) || fail "--help failed"
expect_match "--help" "$out" "^usage: emulated-cluster"
out=$("$c" --check 2>&1) || fail "--check failed"
expect_match "--check" "$out" "${e}OK: network namespaces, veth, bridge, tbf, unshare and mpirun are available$"

# Latency needs netem: where the kernel lacks it, --latency is refused before
# anything is built; where it has it, a 1-host run with latency works.
if out=$("$c" --check --latency 1ms 2>&1); then
  check "--latency 1ms runs (netem present)" "$c" --hosts 1 --latency 1ms --prefix "$prefix" -- true
else
  expect_fail "--latency without netem" 3 \
    "$e--latency 1ms needs the netem qdisc, which this kernel lacks \(.*CONFIG_NET_SCH_NETEM\): use --latency 0$" \
    "$c" --hosts 1 --latency 1ms --prefix "$prefix" -- true
fi
expect_no_leftovers "after the usage errors"

# A namespace of the prefix exists already: refused, and left as it was.
ip netns add "$prefix-h2"
expect_fail "existing namespace" 3 \
  "${e}network namespace $prefix-h2 already exists: another emulated cluster with prefix $prefix is running, or a killed one left it behind \(launch/emulated-cluster --cleanup $prefix\)$" \
  "$c" --hosts 2 --prefix "$prefix" -- true
check "the existing namespace is kept" [ -e "/run/netns/$prefix-h2" ]
check "nothing else was built" [ ! -e "/run/netns/$prefix-sw" ]

# --cleanup removes it, killing what runs inside.
ip netns exec "$prefix-h2" sleep 300 &
sleeper=$!
# Until the sleep runs inside the namespace (ip execs it after setns).
for _ in $(seq 600); do
  [ -z "$(ip netns pids "$prefix-h2" 2>/dev/null)" ] || break
  sleep 0.1
done
out=$("$c" --cleanup "$prefix" 2>&1) || fail "--cleanup failed: $out"
expect_match "--cleanup kills what runs inside" "$out" "${e}killing 1 process\(es\) left running on $prefix-h2: [0-9]+$"
expect_match "--cleanup says what it removed" "$out" "${e}removed $prefix-h2 $"
out=$("$c" --cleanup "$prefix" 2>&1) || fail "--cleanup of nothing failed: $out"
expect_match "--cleanup of nothing" "$out" "${e}removed nothing: no namespace of prefix $prefix$"
wait "$sleeper" 2>/dev/null || true
expect_no_leftovers "after --cleanup"

# The agent.
a=$agent
ip netns add "$prefix-h1"
# shellcheck disable=SC2016 # expanded inside the namespace
out=$("$a" -x "$prefix-h1" 'echo "$(hostname) $(ip -o link show | wc -l)"' '"a  b"' 2>&1) || fail "agent failed: $out"
expect_match "agent: runs in the namespace, with its hostname, through a shell, ssh options skipped" \
  "$out" "^$prefix-h1 1 a  b$"
out=$("$a" "$prefix-h1" exit 7 2>&1) && rc=0 || rc=$?
check "agent: passes the command's exit status ($rc)" [ "$rc" = 7 ]
ip netns del "$prefix-h1"
expect_fail "agent: no arguments" 255 "^netns-agent: usage: netns-agent \[ssh options\] HOST COMMAND \[ARGS...\]$" "$a"
expect_fail "agent: no command" 255 "^netns-agent: usage: " "$a" "$prefix-h1"
expect_fail "agent: unknown host" 255 \
  "^netns-agent: no network namespace named '$prefix-h1' \(emulated hosts are created by launch/emulated-cluster\)$" \
  "$a" "$prefix-h1" true
expect_fail "agent: bad name" 255 "^netns-agent: '../x' is not a valid network namespace name$" "$a" ../x true

# The benchmark script's messages (it stops before building anything).
bench=$src/launch/emulated-cluster-bench
eb="^emulated-cluster-bench: "
expect_fail "bench: unknown option" 2 "${eb}unknown option '--frob'$" "$bench" --frob
expect_fail "bench: no value" 2 "${eb}--steps needs a value$" "$bench" --steps
expect_fail "bench: --what" 2 "${eb}--what 'all' is not train, allreduce or both$" "$bench" --what all
expect_fail "bench: --hosts" 2 "${eb}--hosts '2 4' is not a list of host counts$" "$bench" --hosts "2 4"
expect_fail "bench: --overlap" 2 "${eb}--overlap 'yes' is not a list of on/off$" "$bench" --overlap yes
expect_fail "bench: --steps" 2 "${eb}--steps '1' must be at least 2$" "$bench" --steps 1
expect_fail "bench: --config" 2 "${eb}--config '$scratch/none.yaml' is not a file$" \
  "$bench" --config "$scratch/none.yaml"
expect_fail "bench: not built" 2 \
  "${eb}$scratch/bin/alexnet-train is not built \(set ALEXNET_BIN_DIR to the build's bin\)$" \
  env ALEXNET_BIN_DIR="$scratch/bin" "$bench"
out=$("$bench" --help 2>&1) || fail "bench: --help failed"
expect_match "bench: --help" "$out" "^usage: emulated-cluster-bench"

# Teardown on a signal: the first is passed on to mpirun, whose ranks (sleep)
# end; a second kills mpirun, and the teardown what it leaves. Nothing is
# left either way. Job control, so that the background job keeps SIGINT.
nap=300.$$  # a sleep of our own, to be found in /proc
for sig in INT TERM TERM2; do
  set -m
  "$c" --hosts 2 --prefix "$prefix" --grace 5 -- sleep "$nap" > "$scratch/sig.log" 2>&1 &
  job=$!
  set +m
  running=
  for _ in $(seq 600); do  # mpirun's start through the agent: slow on a loaded machine
    for p in $(ip netns pids "$prefix-h2" 2>/dev/null); do
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" != sleep ] || running=1
    done
    [ -z "$running" ] || break
    sleep 0.1
  done
  [ -n "$running" ] || fail "SIG$sig: the ranks never started: $(cat "$scratch/sig.log")"
  start=$SECONDS
  kill -"${sig%2}" "$job"
  if [ "$sig" = TERM2 ]; then
    sleep 0.3
    kill -TERM "$job"
  fi
  rc=0
  wait "$job" || rc=$?
  took=$((SECONDS - start))
  out=$(cat "$scratch/sig.log")
  check "SIG$sig: ended within 8 s ($took s)" [ "$took" -le 8 ]
  check "SIG$sig: non-zero exit status ($rc)" [ "$rc" != 0 ]
  expect_match "SIG$sig: passed on" "$out" \
    "${e}SIG${sig%2}: passing SIGTERM to mpirun; the job is killed in 5 s or at a second signal$"
  if [ "$sig" = TERM2 ]; then
    expect_match "SIG$sig: a second signal kills" "$out" "${e}SIGTERM again: killing the job$"
  fi
  expect_no_leftovers "after SIG$sig" "sleep $nap"
done
