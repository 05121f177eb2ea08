/*
 * launch/config_internal.h: what config.c (keys, loading, validation) shares
 * with config_layers.c (the layer lists). Private to the config module: other
 * files include config.h.
 */
#ifndef LAUNCH_CONFIG_INTERNAL_H
#define LAUNCH_CONFIG_INTERNAL_H

#include <stddef.h>
#include <yaml.h>

#include "config.h"

/* ---- reading: a walk over libyaml's node tree ----------------------------- */

typedef struct {
  yaml_document_t *doc;
  cfg_config *c;
  int from_set; /* 1: messages say "--set" and origins are marked as overrides */
  char *err;
  size_t errlen;
} cfg_walker;

/* Reports "<where>: <path>: <message>" for a node at mark m. Returns -1. */
int cfg_fail(cfg_walker *w, yaml_mark_t m, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* cfg_fail with "expected <expect>, got <the node, quoted or its kind>". */
int cfg_fail_expect(cfg_walker *w, const yaml_node_t *n, const char *path, const char *expect);
/* How a node looks in a message: a scalar quoted (shortened), or its kind. */
const char *cfg_describe(const yaml_node_t *n, char *buf, size_t len);
/* "(did you mean <prefix>X?)" for a close candidate, else "(known: a, b, c)". */
void cfg_suggest(char *out, size_t len, const char *name, const char *const *cands, int n,
                 const char *prefix);

yaml_node_t *cfg_node(cfg_walker *w, int id);
const char *cfg_scalar(const yaml_node_t *n); /* a scalar node's text */
int cfg_is_null(const yaml_node_t *n);        /* null, ~ or nothing (unquoted) */
/* Plain scalars as values; each returns 0, or -1 leaving *out unchanged. */
int cfg_parse_int(const yaml_node_t *n, int *out);
int cfg_parse_double(const yaml_node_t *n, double *out); /* finite, no hex */
int cfg_parse_bool(const yaml_node_t *n, int *out);
/* An int, or [a, b] (count 2), or [a, b, c, d] when four_ok. Sets *count. */
int cfg_parse_int_list(const cfg_walker *w, const yaml_node_t *n, int *v, int *count, int four_ok);

/* ---- writing: a growing string ------------------------------------------- */

/* On allocation failure `failed` is set and appends stop. */
typedef struct {
  char *s;
  size_t len, cap;
  int failed;
} cfg_strbuf;

void cfg_sb_printf(cfg_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cfg_sb_pair(cfg_strbuf *b, int a, int c); /* an int, or [a, c] when they differ */
/* The shortest text that reads back as the same double (or float when
 * as_float). */
void cfg_fmt_number(char *buf, size_t len, double v, int as_float);

/* ---- layer lists (config_layers.c) --------------------------------------- */

/* A layer list (a YAML sequence) of `section` at key `key` into *specs
 * (malloc'd, caller frees) and *count. Kinds, parameters, defaults and
 * validity come from nn's kind table. Returns 0, or -1 through cfg_fail. */
int cfg_parse_layers(cfg_walker *w, const yaml_node_t *n, const char *key, const char *expect,
                     nn_section section, nn_layer_spec **specs, int *count);

/* A layer list after its key: " []", or one "- layer" line each, indented by
 * `indent` spaces. cfg_parse_layers of the text gives the same specs. */
void cfg_write_layers(cfg_strbuf *b, const nn_layer_spec *s, int n, int indent);

#endif
