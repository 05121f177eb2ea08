#!/usr/bin/env bash
# dist's reducers across hosts (issue 14): the unit tests of the reducer
# (MPI_Allreduce per bucket, dist's ring, hierarchical) and of PowerSGD on
# 2 emulated hosts x 2 ranks, so that the ring runs between hosts and the
# hierarchical reducer has two nodes of two ranks: one leader each, a ring
# of two leaders.
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
require_cluster
trap finish EXIT

tests=$(dirname "$bin")/tests
for t in mpi_dist_reducer mpi_dist_powersgd; do
  out=$(timeout 100 "$cluster" --hosts 2 --ranks-per-host 2 --bandwidth none --prefix "$prefix" -- \
    "$tests/$t" 2>&1) || fail "$t on 2 hosts x 2 ranks failed: $out"
  expect_match "$t on 2 hosts x 2 ranks" "$out" "^Run summary: [0-9]+ case\(s\): [0-9]+ passed, 0 FAILED"
  expect_no_leftovers "after $t"
done
