/*
 * The libFuzzer entry point each fuzz target defines (tests/fuzz/fuzz_*.c).
 * With clang and -fsanitize=fuzzer it is driven by libFuzzer (the `fuzz`
 * target of a -DALEXNET_FUZZ=ON build); in every other build replay.c's main
 * feeds it the committed corpus, so the seeds and every input a fuzzer once
 * crashed on are replayed by ctest, under the sanitizers in their pass.
 */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Runs one input; returns 0. A broken invariant aborts (a fuzzer finding). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with a message naming the invariant when cond is false: the fuzzer
 * (or the replay test) reports the input that broke it. */
#define FUZZ_CHECK(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                       \
      fprintf(stderr, "\n");                                                              \
      abort();                                                                            \
    }                                                                                     \
  } while (0)

#endif
