# bf16 kernels (nn/bf16.c): each kernel against float32/float64 references on
# AlexNet's layer sizes, once per kernel. A kernel this CPU cannot run
# (avx512_bf16 without AVX512-BF16, amx without AMX) exits 77: SKIPPED, with
# the reason printed.
add_executable(bf16_kernels ${CMAKE_CURRENT_SOURCE_DIR}/bf16_kernels.c)
target_link_libraries(bf16_kernels PRIVATE testutil nn)
foreach(kernel avx512_bf16 amx emulated)
  add_test(NAME nn_bf16_${kernel} COMMAND bf16_kernels ${kernel}
           WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/test-tmp)
  set_tests_properties(nn_bf16_${kernel} PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}"
                       TIMEOUT 600 SKIP_RETURN_CODE 77)
endforeach()

# The avx512_bf16 and amx kernels' code (packing, transposes, masks, tile
# shapes, micro-kernels) on portable intrinsics (nn/bf16_portable.h): nn/bf16.c
# compiled again into the test itself, so that its symbols replace the
# library's. Runs on every CPU, so a machine without AVX512-BF16 or AMX still
# checks that code's logic.
add_executable(bf16_kernels_portable ${CMAKE_CURRENT_SOURCE_DIR}/bf16_kernels.c
                                     ${PROJECT_SOURCE_DIR}/nn/bf16.c)
target_compile_definitions(bf16_kernels_portable PRIVATE NN_BF16_PORTABLE)
# 64-byte vectors by value without AVX-512 (nn/bf16_portable.h): GCC notes the ABI
# differs from an AVX-512 build; every such function is static.
target_compile_options(bf16_kernels_portable PRIVATE -Wno-psabi)
target_link_libraries(bf16_kernels_portable PRIVATE testutil nn)
foreach(kernel avx512_bf16 amx emulated)
  add_test(NAME nn_bf16_${kernel}_portable COMMAND bf16_kernels_portable ${kernel}
           WORKING_DIRECTORY ${CMAKE_BINARY_DIR}/test-tmp)
  set_tests_properties(nn_bf16_${kernel}_portable PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}"
                       TIMEOUT 600)
endforeach()
