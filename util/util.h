/*
 * util: the few helpers every module shares, one copy each: the formatter
 * behind every "char *err, size_t errlen" contract, a monotonic clock, the
 * CPU count and a checked malloc. Plain C11 and POSIX, no other module's
 * header: nn, data, dist and launch all build on it.
 */
#ifndef UTIL_UTIL_H
#define UTIL_UTIL_H

#include <stddef.h>

/* Formats a message into err (when err is not NULL and errlen > 0) and
 * returns -1, so that a failing function can `return util_errf(err, errlen,
 * "...", ...);`. Cannot fail; a message longer than errlen is cut. */
int util_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Seconds on CLOCK_MONOTONIC (for durations; not wall-clock time). */
double util_now(void);

/* Online CPUs of this machine, at least 1. */
int util_cpu_count(void);

/* malloc(n) (n = 0 allocates 1 byte) that never returns NULL: out of memory
 * prints "out of memory (N bytes)" to stderr and exits with status 1. For
 * tools and buffers whose loss ends the program anyway; library code that
 * must report through err uses malloc. */
void *util_xmalloc(size_t n);

#endif
