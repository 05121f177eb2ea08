#!/usr/bin/env bash
# One node or several with a hostfile: one rank per socket-sized slice of cores.
#   launch/mpirun-example.sh CONFIG [RANKS] [HOSTFILE] [extra alexnet-train args]
# Threads per rank default to the node's cores / the ranks on that node
# (dist.threads_per_rank: 0), so do not oversubscribe with OMP_NUM_THREADS.
# Binding: each rank gets a contiguous block of cores ("--map-by slot:PE=T"),
# its compute threads stay on them, the loader and communication threads share.
set -euo pipefail
config=${1:?usage: mpirun-example.sh CONFIG [RANKS] [HOSTFILE] [args...]}
ranks=${2:-2}
hostfile=${3:-}
shift $(( $# < 3 ? $# : 3 ))
cores=$(nproc)
per_rank=$(( cores / ranks > 0 ? cores / ranks : 1 ))
args=(-n "$ranks")
if [ -n "$hostfile" ]; then
  args+=(--hostfile "$hostfile")
  # Checkpoints and data on a shared file system: HDF5's file locks are not
  # reliable on NFS/Lustre; every rank only reads.
  args+=(-x HDF5_USE_FILE_LOCKING=FALSE)
fi
if [ $(( per_rank * ranks )) -le "$cores" ]; then
  args+=(--map-by "slot:PE=$per_rank" --bind-to core)
else
  args+=(--oversubscribe --bind-to none)
fi
exec mpirun "${args[@]}" -x OMP_PROC_BIND=close alexnet-train "$config" "$@"
