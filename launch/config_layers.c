/*
 * launch/config_layers.c: model.features and model.classifier, the explicit
 * layer lists of a config, read and written back as YAML. Everything about a
 * kind (its name, parameters, their types, defaults and ranges, its validity
 * rule) comes from nn's kind table (nn_kind_desc in nn.h): a kind added there
 * is read and written here without a change.
 *
 * A layer is a bare kind name (every parameter at its default), or
 * {kind: value} for the kind's shorthand parameter, or {kind: {param: value,
 * ...}}. The writer uses the shortest of these that keeps every parameter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */

/* What a config may write for parameter p, for type errors. */
static const char *param_syntax(const nn_param_desc *p) {
  if (p->syntax) return p->syntax;
  switch (p->type) {
    case NN_PARAM_INT:
      return p->expect;
    case NN_PARAM_HW:
      return "an integer or [h, w]";
    case NN_PARAM_PAD:
      return "an integer, [before, after] or [top, bottom, left, right]";
    case NN_PARAM_FLOAT:
      return "a number";
    case NN_PARAM_BIAS:
      return "true or false";
  }
  return p->expect;
}

static int *int_at(nn_layer_spec *s, size_t off) {
  return (int *)((char *)s + off);
}

/* Sets parameter p of layer s from node n (types only: ranges are
 * nn_layer_problem's). Returns 0, or -1 through cfg_fail naming `path`. */
static int set_param(cfg_walker *w, nn_layer_spec *s, const nn_param_desc *p, const yaml_node_t *n,
                     const char *path) {
  int v[4], cnt, b;
  double d;
  switch (p->type) {
    case NN_PARAM_INT:
      if (cfg_parse_int(n, int_at(s, p->off))) break;
      return 0;
    case NN_PARAM_HW:
      if (cfg_parse_int_list(w, n, v, &cnt, 0)) break;
      *int_at(s, p->off) = v[0];
      *int_at(s, p->off2) = cnt == 2 ? v[1] : v[0];
      return 0;
    case NN_PARAM_PAD:
      if (cfg_parse_int_list(w, n, v, &cnt, 1)) break;
      if (cnt == 1) v[1] = v[2] = v[3] = v[0];
      if (cnt == 2) v[2] = v[0], v[3] = v[1]; /* [before, after] for rows and columns */
      s->pad_top = v[0];
      s->pad_bottom = v[1];
      s->pad_left = v[2];
      s->pad_right = v[3];
      return 0;
    case NN_PARAM_FLOAT:
      if (cfg_parse_double(n, &d)) break;
      *(float *)((char *)s + p->off) = (float)d;
      return 0;
    case NN_PARAM_BIAS:
      if (cfg_parse_bool(n, &b)) break;
      *int_at(s, p->off) = !b;
      return 0;
  }
  return cfg_fail_expect(w, n, path, param_syntax(p));
}

/* Copies parameter p's value(s) from src to dst. */
static void copy_param(nn_layer_spec *dst, const nn_layer_spec *src, const nn_param_desc *p) {
  size_t off = p->off, len = p->type == NN_PARAM_PAD ? 4 * sizeof(int) : sizeof(int);
  memcpy((char *)dst + off, (const char *)src + off, len); /* float and int alike */
  if (p->type == NN_PARAM_HW) *int_at(dst, p->off2) = *(const int *)((const char *)src + p->off2);
}

/* One list item: a bare kind name, or {kind: value-or-mapping-of-params}.
 * Each layer's own rules are checked here; the rules on the layer before
 * (nn_layer_follows) in cfg_validate, once --set may have changed the list. */
static int parse_layer(cfg_walker *w, const yaml_node_t *item, nn_section section, const char *path,
                       nn_layer_spec *out) {
  const yaml_node_t *kind_node = item, *value = NULL;
  if (item->type == YAML_MAPPING_NODE) {
    yaml_node_pair_t *p = item->data.mapping.pairs.start;
    long pairs = item->data.mapping.pairs.top - p;
    if (pairs != 1)
      return cfg_fail(w, item->start_mark, path,
                      "expected one layer kind as the only key, got %ld keys", pairs);
    kind_node = cfg_node(w, p->key);
    value = cfg_node(w, p->value);
  }
  if (kind_node->type != YAML_SCALAR_NODE)
    return cfg_fail_expect(w, kind_node, path, "a layer: a kind name or {kind: parameters}");
  const nn_kind_desc *k = nn_kind_find(cfg_scalar(kind_node));
  if (!k) {
    const char *names[NN_KIND_COUNT];
    for (int i = 0; i < NN_KIND_COUNT; i++) names[i] = nn_kind_name((nn_kind)i);
    char hint[256], got[256];
    cfg_suggest(hint, sizeof hint, cfg_scalar(kind_node), names, NN_KIND_COUNT, "");
    return cfg_fail(w, kind_node->start_mark, path, "unknown layer kind %s %s",
                    cfg_describe(kind_node, got, sizeof got), hint);
  }
  int nparams = 0;
  const char *pnames[NN_KIND_MAX_PARAMS];
  while (nparams < NN_KIND_MAX_PARAMS && k->params[nparams].name) {
    pnames[nparams] = k->params[nparams].name;
    nparams++;
  }
  *out = nn_layer_defaults(k->kind, section);
  const yaml_node_t *given[NN_KIND_MAX_PARAMS] = {0}; /* the key node of each given parameter */
  char sub[512];
  if (value && value->type == YAML_MAPPING_NODE) {
    for (yaml_node_pair_t *p = value->data.mapping.pairs.start; p < value->data.mapping.pairs.top;
         p++) {
      const yaml_node_t *pk = cfg_node(w, p->key), *pv = cfg_node(w, p->value);
      snprintf(sub, sizeof sub, "%s.%s", path, k->name);
      if (pk->type != YAML_SCALAR_NODE) return cfg_fail_expect(w, pk, sub, "a parameter name");
      int which = -1;
      for (int i = 0; i < nparams; i++)
        if (!strcmp(cfg_scalar(pk), pnames[i])) which = i;
      snprintf(sub, sizeof sub, "%s.%s.%.64s", path, k->name, cfg_scalar(pk));
      if (which < 0) {
        if (nparams == 0)
          return cfg_fail(w, pk->start_mark, sub,
                          "unknown key: %s takes no parameters (write '%s')", k->name, k->name);
        char hint[256];
        cfg_suggest(hint, sizeof hint, cfg_scalar(pk), pnames, nparams, "");
        return cfg_fail(w, pk->start_mark, sub, "unknown key %s", hint);
      }
      if (given[which])
        return cfg_fail(w, pk->start_mark, sub, "duplicate key (first at line %zu)",
                        given[which]->start_mark.line + 1);
      given[which] = pk;
      if (set_param(w, out, &k->params[which], pv, sub)) return -1;
    }
  } else if (value && !cfg_is_null(value)) {
    snprintf(sub, sizeof sub, "%s.%s", path, k->name);
    int which = -1;
    for (int i = 0; k->shorthand && i < nparams; i++)
      if (!strcmp(k->shorthand, pnames[i])) which = i;
    if (which < 0) {
      char what[128];
      snprintf(what, sizeof what, "a mapping of %s parameters", k->name);
      return cfg_fail_expect(w, value, sub, nparams ? what : "nothing (null)");
    }
    given[which] = value;
    if (set_param(w, out, &k->params[which], value, sub)) return -1;
  }
  for (int i = 0; i < nparams; i++)
    if (k->params[i].required && !given[i])
      return cfg_fail(w, item->start_mark, path, "%s needs %s", k->name, pnames[i]);
  /* Derived defaults fill only what the config left out: a given 0 stays,
   * to be refused. */
  nn_layer_spec done = *out;
  nn_layer_complete(&done);
  for (int i = 0; i < nparams; i++)
    if (given[i]) copy_param(&done, out, &k->params[i]);
  *out = done;
  char why[256];
  if (nn_layer_problem(out, why, sizeof why))
    return cfg_fail(w, item->start_mark, path, "%s: %s", k->name, why);
  return 0;
}

int cfg_parse_layers(cfg_walker *w, const yaml_node_t *n, const char *key, const char *expect,
                     nn_section section, nn_layer_spec **specs, int *count) {
  if (n->type != YAML_SEQUENCE_NODE) return cfg_fail_expect(w, n, key, expect);
  long items = n->data.sequence.items.top - n->data.sequence.items.start;
  if (items > CFG_MAX_LAYERS)
    return cfg_fail(w, n->start_mark, key, "expected at most %d layers, got %ld", CFG_MAX_LAYERS,
                    items);
  nn_layer_spec *s = calloc(items ? (size_t)items : 1, sizeof *s);
  if (!s) return cfg_fail(w, n->start_mark, key, "out of memory");
  for (long i = 0; i < items; i++) {
    char path[128];
    snprintf(path, sizeof path, "%s[%ld]", key, i);
    if (parse_layer(w, cfg_node(w, n->data.sequence.items.start[i]), section, path, &s[i])) {
      free(s);
      return -1;
    }
  }
  *specs = s;
  *count = (int)items;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

static int param_at_default(const nn_layer_spec *s, const nn_param_desc *p) {
  const int *v = (const int *)((const char *)s + p->off);
  switch (p->type) {
    case NN_PARAM_INT:
      return v[0] == (int)p->def;
    case NN_PARAM_HW:
      return v[0] == (int)p->def && *(const int *)((const char *)s + p->off2) == (int)p->def;
    case NN_PARAM_PAD:
      return s->pad_top == (int)p->def && s->pad_bottom == (int)p->def &&
             s->pad_left == (int)p->def && s->pad_right == (int)p->def;
    case NN_PARAM_FLOAT:
      return *(const float *)v == (float)p->def;
    case NN_PARAM_BIAS:
      return v[0] == !p->def;
  }
  return 0;
}

static void write_param(cfg_strbuf *b, const nn_layer_spec *s, const nn_param_desc *p) {
  const int *v = (const int *)((const char *)s + p->off);
  char num[64];
  switch (p->type) {
    case NN_PARAM_INT:
      cfg_sb_printf(b, "%d", v[0]);
      break;
    case NN_PARAM_HW:
      cfg_sb_pair(b, v[0], *(const int *)((const char *)s + p->off2));
      break;
    case NN_PARAM_PAD:
      if (s->pad_top == s->pad_bottom && s->pad_top == s->pad_left && s->pad_top == s->pad_right)
        cfg_sb_printf(b, "%d", s->pad_top);
      else if (s->pad_top == s->pad_left && s->pad_bottom == s->pad_right)
        cfg_sb_printf(b, "[%d, %d]", s->pad_top, s->pad_bottom);
      else
        cfg_sb_printf(b, "[%d, %d, %d, %d]", s->pad_top, s->pad_bottom, s->pad_left, s->pad_right);
      break;
    case NN_PARAM_FLOAT:
      cfg_fmt_number(num, sizeof num, *(const float *)v, 1);
      cfg_sb_printf(b, "%s", num);
      break;
    case NN_PARAM_BIAS:
      cfg_sb_printf(b, "%s", v[0] ? "false" : "true");
      break;
  }
}

/* A bare name for a kind without parameters, {kind: value} when only the
 * shorthand parameter is to be written, else {kind: {param: value, ...}}
 * with every parameter but the quiet ones at their defaults. */
static void write_layer(cfg_strbuf *b, const nn_layer_spec *s) {
  const nn_kind_desc *k = nn_kind_info(s->kind);
  if (!k || !k->params[0].name) {
    cfg_sb_printf(b, "%s", nn_kind_name(s->kind));
    return;
  }
  const nn_param_desc *shown[NN_KIND_MAX_PARAMS];
  int n = 0;
  for (const nn_param_desc *p = k->params; p < k->params + NN_KIND_MAX_PARAMS && p->name; p++)
    if (!(p->quiet && param_at_default(s, p))) shown[n++] = p;
  if (n == 1 && k->shorthand && !strcmp(shown[0]->name, k->shorthand)) {
    cfg_sb_printf(b, "{%s: ", k->name);
    write_param(b, s, shown[0]);
    cfg_sb_printf(b, "}");
    return;
  }
  cfg_sb_printf(b, "{%s: {", k->name);
  for (int i = 0; i < n; i++) {
    cfg_sb_printf(b, "%s%s: ", i ? ", " : "", shown[i]->name);
    write_param(b, s, shown[i]);
  }
  cfg_sb_printf(b, "}}");
}

void cfg_write_layers(cfg_strbuf *b, const nn_layer_spec *s, int n, int indent) {
  if (n == 0) cfg_sb_printf(b, " []");
  for (int i = 0; i < n; i++) {
    cfg_sb_printf(b, "\n%*s- ", indent, "");
    write_layer(b, &s[i]);
  }
}
