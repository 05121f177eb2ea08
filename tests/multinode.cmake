# Multi-node tests on an emulated cluster (launch/emulated-cluster,
# docs/multinode.md): hosts are network namespaces joined by shaped links,
# Open MPI starts its daemons through launch/netns-agent and talks TCP.
#   multinode_usage       the scripts' messages, refusals, --cleanup, signals
#   multinode_parity      2 hosts x 1 rank: distinct hosts, shaped links, and
#                         the debug config's weights equal mpiexec -n 2's
#   multinode_fault_link  a host's link cut mid-run: a bounded end naming the
#                         rank, then a resume on 1 host completes
#   multinode_fault_kill  a host's rank killed mid-run: the same
# They need root (or CAP_SYS_ADMIN + CAP_NET_ADMIN): where network namespaces
# cannot be created they exit 77, which ctest reports as skipped, with the
# reason in the output. `ctest -L multinode` runs them, `-LE multinode` not.
# TIMEOUT only ends a hung test: fault.sh waits up to 80 s for its start, 37 s
# for the job's end and 60 s for the resumed run.
function(alexnet_multinode_test name script)
  add_test(NAME multinode_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/multinode/${script} ${ARGN}
           WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/test-tmp)
  set_tests_properties(multinode_${name} PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}"
                       LABELS multinode SKIP_RETURN_CODE 77 TIMEOUT 300)
endfunction()

alexnet_multinode_test(usage usage.sh)
alexnet_multinode_test(parity parity.sh)
alexnet_multinode_test(fault_link fault.sh link)
alexnet_multinode_test(fault_kill fault.sh kill)
alexnet_multinode_test(reducer reducer.sh)
