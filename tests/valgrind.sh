#!/usr/bin/env bash
# The memory check of issue 6: a short single-process training run (and a
# resume from its checkpoint), plus the single-process unit tests that run
# in seconds, under valgrind's memcheck. Fails on any error (invalid reads or
# writes, uninitialised values in a decision, bad frees) and on any
# definitely lost block; Open MPI's own leaks are suppressed
# (tests/valgrind.supp). Not part of tests/run: about two to four minutes.
#
#   tests/valgrind.sh [BUILD_DIR]      (default build-valgrind)
#
# valgrind cannot run AVX-512 code, and the Release flags are -march=native:
# the build here is CMake's Debug type with -O2 -g (no -march), which the top
# CMakeLists.txt leaves alone.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
build=${1:-build-valgrind}
jobs=$(nproc)
command -v valgrind > /dev/null || { echo "valgrind.sh: valgrind is not installed" >&2; exit 2; }

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O2 -g" > /dev/null
build=$(cd "$build" && pwd)
cmake --build "$build" -j"$jobs" --target alexnet-train test_config test_checkpoint \
  test_data_format fuzz_config_replay fuzz_dataset_replay fuzz_image_replay > /dev/null

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
supp=(--suppressions="$src/tests/valgrind.supp")
[ -f /usr/share/openmpi/openmpi-valgrind.supp ] &&
  supp+=(--suppressions=/usr/share/openmpi/openmpi-valgrind.supp)
vg=(valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --num-callers=40 "${supp[@]}")

work="$build/valgrind"
rm -rf "$work"
mkdir -p "$work"
failed=()
# check NAME STATUS COMMAND...: runs the command under valgrind (log in
# $work/NAME.log); it must exit with STATUS (99: valgrind found errors).
check() {
  local name=$1 want=$2
  shift 2
  local t0=$SECONDS rc=0
  (cd "$build/test-tmp" && "${vg[@]}" "$@") > "$work/$name.log" 2>&1 || rc=$?
  local summary
  summary=$(grep -E "ERROR SUMMARY" "$work/$name.log" | tail -1 | sed 's/^==[0-9]*== //' || true)
  if [ "$rc" -eq "$want" ]; then
    echo "valgrind: $name passed in $((SECONDS - t0)) s ($summary)"
  else
    echo "valgrind: $name FAILED (exit $rc, $summary); log: $work/$name.log"
    grep -E -A12 "Invalid|uninitialised|definitely lost in|Mismatched|free\(\)" \
      "$work/$name.log" | head -60 || true
    failed+=("$name")
  fi
}

mkdir -p "$build/test-tmp"
train=("$build/bin/alexnet-train" "$src/configs/debug.yaml" --set "run.dir=$work/run"
       --set data.synthetic.n=64 --set train.batch_size=8 --set eval.batch_size=8
       --set dist.threads_per_rank=1 --set log.every_steps=1)
check train_2_steps 0 "${train[@]}" --set train.max_steps=2
check train_resume 0 "${train[@]}" --set train.max_steps=3
check train_bad_config 2 "${train[@]}" --set optimizer.lr=fast
check train_bad_data 1 "${train[@]}" --set data.synthetic.n=0 --set "data.train=$src/configs/debug.yaml"
check config 0 "$build/tests/test_config"
check checkpoint 0 "$build/tests/test_checkpoint"
check data_format 0 "$build/tests/test_data_format"
for t in config dataset image; do
  check "fuzz_${t}_replay" 0 "$build/tests/fuzz_${t}_replay" "$src/tests/fuzz/corpus/$t"
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "valgrind: ${#failed[@]} failed: ${failed[*]}"
  exit 1
fi
echo "valgrind: all passed"
