/*
 * launch/tool.c: command lines and thread counts of the executables.
 */
#include "tool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "nn.h"
#include "setup.h"

void tool_usage(const tool_spec *spec, const char *fmt, ...) {
  if (dist_rank() == 0) {
    if (fmt) {
      va_list ap;
      va_start(ap, fmt);
      fprintf(stderr, "%s: ", spec->name);
      vfprintf(stderr, fmt, ap);
      fprintf(stderr, "\n");
      va_end(ap);
    }
    fputs(spec->usage, stderr);
    fflush(stderr);
  }
  setup_exit(2, NULL);
}

int tool_parse_int(const char *opt, const char *value, long long lo, long long hi, long long *out,
                   char *err, size_t errlen) {
  char *end;
  errno = 0;
  long long v = strtoll(value, &end, 10);
  if (errno || end == value || *end || v < lo || v > hi) {
    snprintf(err, errlen, "%s %s: expected an integer >= %lld and <= %lld", opt, value, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int list_add(tool_list *l, const char *item, int cap) {
  if (!l->items) l->items = calloc((size_t)cap, sizeof(char *));
  if (!l->items) return -1;
  l->items[l->count++] = item;
  return 0;
}

void tool_list_free(tool_list *l) {
  free(l->items);
  l->items = NULL;
  l->count = 0;
}

/* The table entry for argument a ("--name" or "--name=value"); *inline_value
 * points after '=' for the second form. */
static const tool_opt *find(const tool_spec *spec, const char *a, const char **inline_value) {
  *inline_value = NULL;
  for (const tool_opt *o = spec->opts; o && o->name; o++) {
    size_t n = strlen(o->name);
    if (strncmp(a, o->name, n) != 0) continue;
    if (a[n] == '\0') return o;
    if (a[n] == '=' && o->kind != TOOL_FLAG) {
      *inline_value = a + n + 1;
      return o;
    }
  }
  return NULL;
}

void tool_parse(const tool_spec *spec, int argc, char **argv) {
  setup_tool = spec->name;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) tool_usage(spec, NULL);
    if (a[0] != '-' || a[1] == '\0') {
      if (!spec->args) tool_usage(spec, "unexpected argument %s", a);
      if (list_add(spec->args, a, argc) != 0) setup_exit(1, "out of memory");
      continue;
    }
    const char *value;
    const tool_opt *o = find(spec, a, &value);
    if (!o) tool_usage(spec, "unknown option %s", a);
    if (o->kind == TOOL_FLAG) {
      *(int *)o->dst = 1;
      continue;
    }
    if (!value) {
      if (i + 1 >= argc) tool_usage(spec, "%s needs a value", a);
      value = argv[++i];
    }
    if (o->kind == TOOL_STRING) {
      *(const char **)o->dst = value;
    } else if (o->kind == TOOL_LIST) {
      if (list_add(o->dst, value, argc) != 0) setup_exit(1, "out of memory");
    } else {
      long long v;
      char err[512];
      if (tool_parse_int(o->name, value, o->lo, o->hi, &v, err, sizeof err) != 0)
        tool_usage(spec, "%s", err);
      *(int *)o->dst = (int)v;
    }
  }
}

int tool_threads(int requested) {
  int threads = requested > 0 ? requested : dist_default_threads();
  if (threads > TOOL_MAX_THREADS) threads = TOOL_MAX_THREADS;
  nn_set_threads(threads);
  return threads;
}

int tool_precision(const tool_spec *spec, const char *value) {
  if (!value || strcmp(value, "fp32") == 0) return 0;
  if (strcmp(value, "bf16") == 0) return 1;
  tool_usage(spec, "--precision %s: expected fp32 or bf16", value);
}
