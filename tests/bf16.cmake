# bf16 kernels (nn/bf16.c): each kernel against float32/float64 references on
# AlexNet's layer sizes, once per kernel. A kernel this CPU cannot run
# (avx512_bf16 without AVX512-BF16) exits 77: SKIPPED, with the reason printed.
add_executable(bf16_kernels ${CMAKE_CURRENT_SOURCE_DIR}/bf16_kernels.c)
target_link_libraries(bf16_kernels PRIVATE testutil nn)
foreach(kernel avx512_bf16 emulated)
  add_test(NAME nn_bf16_${kernel} COMMAND bf16_kernels ${kernel}
           WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/test-tmp)
  set_tests_properties(nn_bf16_${kernel} PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}"
                       TIMEOUT 600 SKIP_RETURN_CODE 77)
endforeach()
