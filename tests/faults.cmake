# The fault and determinism tests (issue 6) beyond the generic registration in
# tests/CMakeLists.txt: they share tests/faults/trainrun.c (runs of the debug
# config through alexnet-train, checkpoint comparison through launch's loader)
# and run the executables, so building them builds the tools.
foreach(t test_faults test_determinism test_train test_runs test_powersgd_resume)
  if(TARGET ${t})
    target_sources(${t} PRIVATE ${CMAKE_CURRENT_LIST_DIR}/faults/trainrun.c)
    target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_LIST_DIR}/faults)
    foreach(tool alexnet-train alexnet-convert)
      if(TARGET ${tool})
        add_dependencies(${t} ${tool})
      endif()
    endforeach()
  endif()
endforeach()
# test_bad_input runs every tool and writes a PNG header with zlib's crc32.
if(TARGET test_bad_input)
  target_link_libraries(test_bad_input PRIVATE ZLIB::ZLIB)
  foreach(tool alexnet-train alexnet-convert alexnet-predict)
    if(TARGET ${tool})
      add_dependencies(test_bad_input ${tool})
    endif()
  endforeach()
endif()
# The determinism runs repeat what test_train and test_faults already run under
# the sanitizers, only more often: left out of the sanitizer pass.
if(TARGET test_determinism)
  set_tests_properties(determinism PROPERTIES LABELS slow)
endif()
# The cases that need a private mount namespace (root or CAP_SYS_ADMIN) run as
# their own entry, reported as skipped where unshare -m is refused.
if(TARGET test_faults)
  alexnet_env_cases(faults mount "checkpoint directory read-only"
                    "disk full while writing a checkpoint")
endif()
# alexnet-train with the fault injections of the environment (tests/faults/hooked.c):
# the production main linked unchanged, the hooks set before it runs. Beside
# the tools in bin/, never installed.
add_executable(alexnet-train-hooked ${CMAKE_CURRENT_LIST_DIR}/faults/hooked.c
                                    ${CMAKE_SOURCE_DIR}/launch/alexnet_train.c)
target_link_libraries(alexnet-train-hooked PRIVATE launch)
set_target_properties(alexnet-train-hooked PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                      ${CMAKE_BINARY_DIR}/bin)
foreach(t test_faults test_determinism test_train test_runs test_powersgd_resume)
  if(TARGET ${t})
    add_dependencies(${t} alexnet-train-hooked)
  endif()
endforeach()
# The install target puts the tools under their bare names (issue 17, item 12).
add_test(NAME install_tools COMMAND bash -c "
  set -e
  d=${CMAKE_BINARY_DIR}/test-tmp/install_tools; rm -rf \$d
  cmake --install ${CMAKE_BINARY_DIR} --prefix \$d > /dev/null
  for t in alexnet-train alexnet-eval alexnet-predict alexnet-convert alexnet-bench alexnet-plot-run; do
    test -x \$d/bin/\$t
  done
  test ! -e \$d/bin/alexnet-train-hooked
  if \$d/bin/alexnet-train --help 2> \$d/err; then exit 1; fi
  grep -q 'usage: alexnet-train CONFIG' \$d/err
  \$d/bin/alexnet-plot-run --help | grep -q 'usage: launch/plot-run'")
