/*
 * tool: what every executable does first: its command line (options from a
 * table, integers checked against their bounds, --set overrides), its thread
 * count, and usage errors. The exit path is setup_exit (setup.h).
 *
 * Usage errors print "<tool>: <why>" and the usage text on stderr (rank 0)
 * and exit with status 2; --help and -h print the usage and exit with 2 too
 * (nothing was done).
 */
#ifndef LAUNCH_TOOL_H
#define LAUNCH_TOOL_H

#include <stddef.h>

/* Compute threads a tool accepts: beyond this libgomp's thread stacks
 * exhaust memory long before anything gets faster. */
#define TOOL_MAX_THREADS 1024

typedef enum {
  TOOL_FLAG,   /* --name: *(int *)dst = 1 */
  TOOL_STRING, /* --name VALUE: *(const char **)dst = VALUE */
  TOOL_INT,    /* --name N: *(int *)dst = N, N in [lo, hi] */
  TOOL_LIST,   /* --name VALUE, repeatable: appended to *(tool_list *)dst */
} tool_kind;

/* Values of a repeatable option or the positional arguments; items point
 * into argv. Free items with tool_list_free. */
typedef struct {
  const char **items;
  int count;
} tool_list;

typedef struct {
  const char *name; /* "--top", "-o"; "--name=VALUE" is accepted as well */
  tool_kind kind;
  void *dst;
  long long lo, hi; /* TOOL_INT: accepted range */
} tool_opt;

/* Table rows: TOOL_OPT_FLAG("--json", &json), TOOL_OPT_INT("--top", &top, 1, 1000), ...,
 * TOOL_OPT_END. */
#define TOOL_OPT_FLAG(n, d) \
  { .name = (n), .kind = TOOL_FLAG, .dst = (d) }
#define TOOL_OPT_STRING(n, d) \
  { .name = (n), .kind = TOOL_STRING, .dst = (d) }
#define TOOL_OPT_LIST(n, d) \
  { .name = (n), .kind = TOOL_LIST, .dst = (d) }
#define TOOL_OPT_INT(n, d, l, h) \
  { .name = (n), .kind = TOOL_INT, .dst = (d), .lo = (l), .hi = (h) }
#define TOOL_OPT_END \
  { .name = NULL }

typedef struct {
  const char *name;     /* "alexnet-predict": messages start with it */
  const char *usage;    /* the usage text, printed after a usage error */
  const tool_opt *opts; /* ends with an entry whose name is NULL */
  tool_list *args;      /* positional arguments; NULL: none accepted */
} tool_spec;

/* Sets setup_tool to spec->name and parses argv[1..argc) into the option
 * table's destinations. Leaves with status 2 on a usage error (an unknown
 * option, a missing value, an integer out of its bounds, an unexpected
 * argument). */
void tool_parse(const tool_spec *spec, int argc, char **argv);

/* Leaves with status 2: rank 0 prints "<tool>: <why>" (why NULL: nothing)
 * and the usage text on stderr. */
void tool_usage(const tool_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Parses an integer option value in [lo, hi]; returns 0, or -1 with
 * "<opt> <value>: expected an integer >= lo and <= hi" in err. */
int tool_parse_int(const char *opt, const char *value, long long lo, long long hi, long long *out,
                   char *err, size_t errlen);

/* The value of a --precision option: 0 for "fp32" (or NULL, not given), 1
 * for "bf16"; anything else is a usage error ("--precision X: expected fp32
 * or bf16"). */
int tool_precision(const tool_spec *spec, const char *value);

/* The thread count for `requested` (0: dist_default_threads(), the cores
 * shared by this node's ranks), set for nn's kernels. Returns it. The
 * caller has bounded requested to [0, TOOL_MAX_THREADS]. */
int tool_threads(int requested);

void tool_list_free(tool_list *l);

#endif
