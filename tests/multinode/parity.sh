#!/usr/bin/env bash
# The emulated cluster works and is what it claims (issue 8):
#  1. each rank runs on its own host: its own hostname and address on the /24;
#  2. ranks on different hosts talk through the shaped links: an allreduce
#     over 8 Mbit/s links takes as long as the bytes need;
#  3. the debug config, 2 hosts x 1 rank, a few steps, ends with the same
#     weights as under plain mpiexec -n 2;
#  4. nothing is left behind, and the machine's own network is untouched.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
require_cluster
trap finish EXIT

root_links_before=$(ip -o link show | sed 's/ state .*//')
root_qdiscs_before=$(tc qdisc show)

# 1. Hosts.
# shellcheck disable=SC2016 # expanded by the ranks' shell
out=$("$cluster" --hosts 2 --prefix "$prefix" -- sh -c \
  'echo "rank $OMPI_COMM_WORLD_RANK on $(hostname) at $(ip -4 -o addr show eth0 | awk "{print \$4}")"' 2>&1) ||
  fail "hosts: the cluster failed: $out"
expect_match "rank 0 on host 1" "$out" "^rank 0 on $prefix-h1 at 10\.213\.0\.11/24$"
expect_match "rank 1 on host 2" "$out" "^rank 1 on $prefix-h2 at 10\.213\.0\.12/24$"
expect_no_leftovers "after the hosts run"

# 2. Shaping: 0.5 MB allreduced by 2 ranks crosses each 1 MB/s link at least
# once, 0.5 s; unshaped it takes milliseconds.
out=$("$cluster" --hosts 2 --bandwidth 8mbit --prefix "$prefix" -- \
  "$bin/alexnet-allreduce-bench" --mb 0.5 --buckets 1 --iters 1 --json 2>&1) ||
  fail "shaping: the cluster failed: $out"
ms=$(sed -n 's/.*"method": "MPI_Allreduce".*"time_ms": \([0-9.]*\).*/\1/p' <<< "$out")
if [ -z "$ms" ]; then
  fail "shaping: no MPI_Allreduce row in: $out"
elif awk -v t="$ms" 'BEGIN { exit !(t >= 450 && t < 5000) }'; then
  pass "shaping: 0.5 MB allreduce over 8 Mbit/s links took $ms ms (>= 450)"
else
  fail "shaping: 0.5 MB allreduce over 8 Mbit/s links took $ms ms, expected 450..5000"
fi

# 3. The same weights as mpiexec -n 2.
args=("$src/configs/debug.yaml" --set train.max_steps=4 --set model.dropout=0
      --set dist.threads_per_rank=1 --set checkpoint.resume=never)
ref=$(timeout 60 mpiexec -n 2 "$train" "${args[@]}" --set run.dir="$scratch/plain" 2>&1) ||
  fail "parity: mpiexec -n 2 failed: $ref"
out=$(timeout 60 "$cluster" --hosts 2 --prefix "$prefix" -- \
  "$train" "${args[@]}" --set run.dir="$scratch/cluster" 2>&1) ||
  fail "parity: the emulated cluster failed: $out"
expect_match "parity: trained on 2 ranks" "$out" "2 ranks x 1 thread"
a=$scratch/plain/checkpoints/step-00000004.h5
b=$scratch/cluster/checkpoints/step-00000004.h5
if [ ! -f "$a" ] || [ ! -f "$b" ]; then
  fail "parity: a final checkpoint is missing ($a, $b)"
elif diff=$(h5diff -d 1e-6 "$a" "$b" /model /model 2>&1); then
  pass "parity: /model of 2 emulated hosts equals mpiexec -n 2 (h5diff -d 1e-6)"
else
  fail "parity: /model differs between mpiexec -n 2 and 2 emulated hosts: $diff"
fi
expect_no_leftovers "after training"

# 4. The machine's own namespace never saw any of it.
check "the root namespace's links are unchanged" \
  [ "$(ip -o link show | sed 's/ state .*//')" = "$root_links_before" ]
check "the root namespace's qdiscs are unchanged" [ "$(tc qdisc show)" = "$root_qdiscs_before" ]
