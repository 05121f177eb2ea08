# dist's MPI tests beyond the generic -n 2 / -n 4 runs of tests/CMakeLists.txt:
#  - the MPI tests over TCP only (--mca btl self,tcp): a network path that is
#    not shared memory (issue 6);
#  - fault scenarios: a test executable run with "--fault <mode>" under
#    mpiexec must exit with the expected status, print the expected messages
#    and die within a time limit. The check is this same file in script mode
#    (cmake -P), because ctest's PASS_REGULAR_EXPRESSION alone would ignore
#    the exit status.

if(CMAKE_SCRIPT_MODE_FILE)
  # -DLAUNCH=<command, arguments separated by '|'> -DEXPECT_RC=<status|nonzero>
  # -DEXPECT=<regexes separated by '|'> -DMAX_S=<seconds>
  string(REPLACE "|" ";" launch "${LAUNCH}")
  string(REPLACE "|" ";" expect "${EXPECT}")
  string(TIMESTAMP t0 "%s")
  execute_process(COMMAND ${launch} OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE rc
                  TIMEOUT 60)
  string(TIMESTAMP t1 "%s")
  # Timed from the fault when the program marks it (tu_mark_fault), else from
  # the start: MPI's start-up on a loaded machine is no part of the promise.
  set(from "the start")
  if(out MATCHES "fault injected at ([0-9]+): ")
    set(t0 ${CMAKE_MATCH_1})
    set(from "the fault")
  endif()
  math(EXPR took "${t1} - ${t0}")
  message("${out}")
  message("-- exit status ${rc} ${took} s after ${from} (expected ${EXPECT_RC} within ${MAX_S} s)")
  set(bad)
  if(EXPECT_RC STREQUAL "nonzero")
    if(NOT rc MATCHES "^[0-9]+$" OR rc EQUAL 0)
      list(APPEND bad "exit status ${rc}, expected non-zero")
    endif()
  elseif(NOT rc STREQUAL EXPECT_RC)
    list(APPEND bad "exit status ${rc}, expected ${EXPECT_RC}")
  endif()
  # A sanitizer's finding in any rank fails the test even where a non-zero
  # status is expected (the sanitizer pass).
  if(out MATCHES "ERROR: (Leak|Address)Sanitizer|: runtime error: ")
    list(APPEND bad "a sanitizer reported (output above)")
  endif()
  foreach(re IN LISTS expect)
    if(NOT out MATCHES "${re}")
      list(APPEND bad "no output matching: ${re}")
    endif()
  endforeach()
  if(took GREATER MAX_S)
    list(APPEND bad "took ${took} s after ${from}, more than ${MAX_S} s")
  endif()
  if(bad)
    string(REPLACE ";" "\n  " bad "${bad}")
    message(FATAL_ERROR "fault test failed:\n  ${bad}")
  endif()
  return()
endif()

foreach(stem mpi_dist_reducer mpi_dist_comm mpi_dist_powersgd)
  add_test(NAME ${stem}_tcp
           COMMAND ${MPIEXEC_EXECUTABLE} -n 2 --mca btl self,tcp $<TARGET_FILE:${stem}>
           WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/test-tmp)
  set_tests_properties(${stem}_tcp PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}" TIMEOUT 120
                       LABELS mpi)
endforeach()

# alexnet_dist_expect(<test name> <np> <executable> <exit status> <max s>
#                     [MPI <extra mpiexec args>...] [ARGS <program args>...]
#                     EXPECT <regex>...)
function(alexnet_dist_expect name np exe rc max_s)
  cmake_parse_arguments(F "" "" "MPI;ARGS;EXPECT" ${ARGN})
  if(TARGET ${exe})
    set(exe $<TARGET_FILE:${exe}>)
  endif()
  set(launch ${MPIEXEC_EXECUTABLE} -n ${np} ${F_MPI} ${exe} ${F_ARGS})
  string(REPLACE ";" "|" launch "${launch}")
  string(REPLACE ";" "|" expect "${F_EXPECT}")
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} "-DLAUNCH=${launch}" "-DEXPECT_RC=${rc}" "-DEXPECT=${expect}"
                   "-DMAX_S=${max_s}" -P ${CMAKE_CURRENT_LIST_FILE}
           WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/test-tmp)
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}" TIMEOUT 90
                       LABELS mpi)
endfunction()

# The watchdog: one rank sleeps instead of joining; the job must end within
# seconds, naming the collective, the timeout and the silent rank.
alexnet_dist_expect(dist_fault_watchdog_reducer 2 mpi_dist_reducer 1 15 ARGS --fault watchdog
  EXPECT "\\[rank 0\\] dist: allreduce of bucket 0 \\([^)]*\\)\\) did not complete within 1.5 s: a peer rank is gone or stuck; aborting the job"
         "\\[rank 0\\] dist: no answer within 1.5 s from rank 1 \\(gone, stuck outside the collective, or unreachable\\)")
alexnet_dist_expect(dist_fault_watchdog_reducer_tcp 2 mpi_dist_reducer 1 15 ARGS --fault watchdog
  MPI --mca btl self,tcp
  EXPECT "did not complete within 1.5 s" "no answer within 1.5 s from rank 1 ")
alexnet_dist_expect(dist_fault_watchdog_barrier 4 mpi_dist_comm 1 15 ARGS --fault watchdog-barrier
  MPI --oversubscribe
  EXPECT "\\[rank [0-2]\\] dist: barrier did not complete within 1.0 s"
         "\\[rank [0-2]\\] dist: no answer within 1.0 s from rank 3 ")
# A rank that dies: mpirun ends the job and names it.
alexnet_dist_expect(dist_fault_kill 2 mpi_dist_comm nonzero 15 ARGS --fault kill
  EXPECT "process rank 1 with PID [0-9]+ on node [^ ]+ exited on signal 9")
alexnet_dist_expect(dist_fault_abort 2 mpi_dist_comm 3 15 ARGS --fault abort
  EXPECT "\\[rank 1\\] test abort from the last rank, code 3")
alexnet_dist_expect(dist_fault_mpi_error 2 mpi_dist_comm 1 15 ARGS --fault mpi-error
  EXPECT "\\[rank [01]\\] dist: MPI_Bcast\\(.*\\) failed at dist.c:[0-9]+: MPI_ERR_ROOT: invalid root")

# Misuse of the reducer: each aborts with its message (one rank suffices).
alexnet_dist_expect(dist_fault_bad_bucket 1 mpi_dist_reducer 1 15 ARGS --fault bad-bucket
  EXPECT "\\[rank 0\\] dist: bucket_mb -1 is out of range \\(0, 4096\\]")
alexnet_dist_expect(dist_fault_bad_compress 1 mpi_dist_reducer 1 15 ARGS --fault bad-compress
  EXPECT "\\[rank 0\\] dist: unknown gradient compression 7")
alexnet_dist_expect(dist_fault_no_buffer 1 mpi_dist_reducer 1 15 ARGS --fault no-buffer
  EXPECT "\\[rank 0\\] dist: reducer over 10 floats with no buffer")
alexnet_dist_expect(dist_fault_ready_outside 1 mpi_dist_reducer 1 15 ARGS --fault outside
  EXPECT "\\[rank 0\\] dist: gradients \\[7871, 7873\\) reported ready are outside the buffer of 7872 floats")
alexnet_dist_expect(dist_fault_ready_twice 1 mpi_dist_reducer 1 15 ARGS --fault twice
  EXPECT "\\[rank 0\\] dist: gradients \\[7822, 7832\\) reported ready overlap floats already reported in this backward pass \\(bucket 0, floats \\[5248, 7872\\)\\)")
alexnet_dist_expect(dist_fault_ready_no_begin 1 mpi_dist_reducer 1 15 ARGS --fault no-begin
  EXPECT "\\[rank 0\\] dist: dist_reducer_ready called outside dist_reducer_begin/finish")
alexnet_dist_expect(dist_fault_begin_twice 1 mpi_dist_reducer 1 15 ARGS --fault begin-twice
  EXPECT "\\[rank 0\\] dist: dist_reducer_begin called twice without dist_reducer_finish")

# alexnet-allreduce-bench: a small run prints every row; bad options are refused.
set(bench alexnet-allreduce-bench)
alexnet_dist_expect(allreduce_bench_small 2 ${bench} 0 60
  ARGS --mb 2 --buckets 0.25,1 --compress none,bf16,fp16 --iters 1 --backward-ms 4 --pieces 4
  EXPECT "alexnet-allreduce-bench: 2 ranks, 500000 floats \\(2.0 MB\\), median of 1 runs"
         "MPI_Allreduce +- +none +- +[0-9.]+ +[0-9.]+ +-"
         "reducer +0.25 +fp16 +mpi +[0-9.]+ +[0-9.]+ +[0-9.]+"
         "reducer\\+backward no-overlap +1 +bf16 +mpi +[0-9.]+ +[0-9.]+ +[0-9.]+")
alexnet_dist_expect(allreduce_bench_algorithms 2 ${bench} 0 60
  ARGS --mb 2 --buckets 0.25 --compress none,fp16 --algorithm auto,ring --iters 1
  EXPECT "reducer +0.25 +none +mpi +[0-9.]+ +[0-9.]+ +[0-9.]+"
         "reducer +0.25 +fp16 +ring +[0-9.]+ +[0-9.]+ +[0-9.]+")
alexnet_dist_expect(allreduce_bench_bad_algorithm 1 ${bench} 2 15 ARGS --algorithm tree
  EXPECT "alexnet-allreduce-bench: unknown algorithm tree \\(auto, mpi, ring, hier\\)")
alexnet_dist_expect(allreduce_bench_bad_bucket 1 ${bench} 2 15 ARGS --buckets 4,0
  EXPECT "alexnet-allreduce-bench: bucket sizes must be in \\(0, 4096\\] MiB, not 0")
alexnet_dist_expect(allreduce_bench_bad_compress 1 ${bench} 2 15 ARGS --compress zip
  EXPECT "alexnet-allreduce-bench: unknown compression zip \\(none, bf16, fp16\\)")
alexnet_dist_expect(allreduce_bench_bad_option 1 ${bench} 2 15 ARGS --fast
  EXPECT "alexnet-allreduce-bench: unknown option --fast")

# PowerSGD's bad input: each aborts with its message.
alexnet_dist_expect(dist_fault_powersgd_rank 1 mpi_dist_powersgd 1 15 ARGS --fault rank-zero
  EXPECT "\\[rank 0\\] dist: powersgd rank 0 must be at least 1")
alexnet_dist_expect(dist_fault_powersgd_start 1 mpi_dist_powersgd 1 15 ARGS --fault start
  EXPECT "\\[rank 0\\] dist: powersgd_start_step -1 must be at least 0")
alexnet_dist_expect(dist_fault_powersgd_overlap 1 mpi_dist_powersgd 1 15 ARGS --fault overlap
  EXPECT "\\[rank 0\\] dist: powersgd matrix 1 \\(2 x 3 at float 10\\) overlaps another")
alexnet_dist_expect(dist_fault_powersgd_state_range 1 mpi_dist_powersgd 1 15 ARGS --fault state-range
  EXPECT "\\[rank 0\\] dist: reducer state \\[2658, 2662\\) is outside its 2660 floats")

# dist.hierarchical: on within one node is refused, naming the key.
alexnet_dist_expect(dist_hierarchical_one_node 2 alexnet-train 2 30
  ARGS ${CMAKE_SOURCE_DIR}/configs/debug.yaml --set dist.hierarchical=on
       --set run.dir=${CMAKE_BINARY_DIR}/test-tmp/dist_hier_one_node
  EXPECT "dist.hierarchical: on needs ranks on more than one node, but all 2 ranks run on this one \\(use auto or off\\)")
