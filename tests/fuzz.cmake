# Fuzzing (issue 6): libFuzzer targets for the YAML config loader, the
# dataset opener's validation and the image decoders' wrapper
# (tests/fuzz/fuzz_<target>.c, each with a committed corpus in
# tests/fuzz/corpus/<target>: seeds and every input that once broke it).
#
# Every build: fuzz_<target>_replay runs the corpus once through the target
# (tests/fuzz/replay.c), a ctest entry of a few hundred milliseconds, under
# the sanitizers in their pass.
#
# A fuzz build (clang; ALEXNET_FUZZ instruments every library, see the top
# CMakeLists.txt) adds the libFuzzer executables and the `fuzz` target, which
# runs each for ALEXNET_FUZZ_SECONDS (not part of ctest):
#   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DALEXNET_FUZZ=ON
#   cmake --build build-fuzz --target fuzz
# New inputs go to build-fuzz/fuzz/<target>/corpus, crashes to
# build-fuzz/fuzz/<target>/crash-*; a crash, once fixed, is copied into
# tests/fuzz/corpus/<target>/ so that the replay test keeps it fixed.
set(FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR}/fuzz)
set(ALEXNET_FUZZ_SECONDS 60 CACHE STRING "Seconds the fuzz target spends on each fuzzer")
set(FUZZ_TARGETS config dataset image)
set(FUZZ_LIBS_config launch)
set(FUZZ_LIBS_dataset data)
set(FUZZ_LIBS_image data)


foreach(t ${FUZZ_TARGETS})
  add_executable(fuzz_${t}_replay ${FUZZ_DIR}/fuzz_${t}.c ${FUZZ_DIR}/replay.c)
  target_include_directories(fuzz_${t}_replay PRIVATE ${FUZZ_DIR} ${HDF5_C_INCLUDE_DIRS})
  target_link_libraries(fuzz_${t}_replay PRIVATE ${FUZZ_LIBS_${t}})
  add_test(NAME fuzz_${t}_replay COMMAND fuzz_${t}_replay ${FUZZ_DIR}/corpus/${t}
           WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/test-tmp)
  set_tests_properties(fuzz_${t}_replay PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}" TIMEOUT 300
                       LABELS fuzz)
endforeach()

if(ALEXNET_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "ALEXNET_FUZZ=ON needs clang (libFuzzer): configure a separate build "
                        "with -DCMAKE_C_COMPILER=clang -DALEXNET_FUZZ=ON")
  endif()
  set(all_runs)
  set(all_deps)
  foreach(t ${FUZZ_TARGETS})
    add_executable(fuzz_${t} ${FUZZ_DIR}/fuzz_${t}.c)
    target_include_directories(fuzz_${t} PRIVATE ${FUZZ_DIR} ${HDF5_C_INCLUDE_DIRS})
    target_compile_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_${t} PRIVATE ${FUZZ_LIBS_${t}})
    set(work ${CMAKE_BINARY_DIR}/fuzz/${t})
    file(MAKE_DIRECTORY ${work}/corpus)
    # New inputs go to the first directory (the build's), the committed
    # corpus is only read.
    set(run ${CMAKE_COMMAND} -E chdir ${work}
        ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1 TMPDIR=${work}
        $<TARGET_FILE:fuzz_${t}> -max_total_time=${ALEXNET_FUZZ_SECONDS} -max_len=65536
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=${work}/
        ${work}/corpus ${FUZZ_DIR}/corpus/${t})
    add_custom_target(fuzz_run_${t} COMMAND ${run} DEPENDS fuzz_${t} USES_TERMINAL
                      COMMENT "fuzzing ${t} for ${ALEXNET_FUZZ_SECONDS} s")
    list(APPEND all_runs COMMAND ${run})
    list(APPEND all_deps fuzz_${t})
  endforeach()
  # All of them, one after the other (each fuzzer is one process on one core).
  string(REPLACE ";" ", " names "${FUZZ_TARGETS}")
  add_custom_target(fuzz ${all_runs} DEPENDS ${all_deps} USES_TERMINAL
                    COMMENT "fuzzing ${names}, ${ALEXNET_FUZZ_SECONDS} s each")
endif()
