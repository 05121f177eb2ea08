/*
 * Fuzz target: the YAML config loader (launch/config.c).
 *
 * Input: YAML text, optionally followed by "\0<key.path=value>" pieces, each
 * an override as --set gives it. The text is loaded (cfg_load_string), the
 * overrides applied (cfg_set), the result validated (cfg_validate,
 * cfg_check_ranks) and, when valid, its layer list made (cfg_model_specs) and
 * its schedule evaluated. Invariants checked on the way:
 *   - every failure comes with a message, and a failed override leaves the
 *     config as it was (its YAML dump unchanged);
 *   - the dump of a loaded config loads again and dumps to the same text
 *     (cfg_to_yaml's round-trip promise);
 *   - a valid config has a finite learning rate >= 0 over the whole run.
 * Networks are not built: a fuzzed layer list may ask for terabytes, which
 * is nn's concern (nn_net_build refuses what it cannot allocate).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

#define ERRLEN 8192

/* Dump of c; loading it gives back the same dump. Returns the dump (malloc'd). */
static char *checked_dump(const cfg_config *c) {
  char *yaml = cfg_to_yaml(c);
  FUZZ_CHECK(yaml != NULL, "cfg_to_yaml returned NULL");
  cfg_config again;
  char err[ERRLEN] = "";
  int rc = cfg_load_string(yaml, c->source, &again, err, sizeof err);
  FUZZ_CHECK(rc == 0, "the dump does not load: %s\n--- dump:\n%s", err, yaml);
  char *yaml2 = cfg_to_yaml(&again);
  FUZZ_CHECK(yaml2 && strcmp(yaml, yaml2) == 0, "the dump changes when reloaded:\n%s\n---\n%s",
             yaml, yaml2 ? yaml2 : "(null)");
  free(yaml2);
  cfg_free(&again);
  return yaml;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) return 0;
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  size_t first = strlen(text); /* the YAML text ends at the first NUL */

  cfg_config c;
  char err[ERRLEN] = "";
  int rc = cfg_load_string(text, "fuzz.yaml", &c, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(rc == -1 && err[0], "cfg_load_string failed (%d) without a message", rc);
    cfg_free(&c);
    free(text);
    return 0;
  }
  char *before = checked_dump(&c);

  /* The overrides after the text, each NUL-terminated. */
  for (size_t at = first + 1; at <= size; at += strlen(text + at) + 1) {
    const char *set = text + at;
    err[0] = '\0';
    if (cfg_set(&c, set, err, sizeof err) == 0) {
      free(before);
      before = checked_dump(&c);
    } else {
      FUZZ_CHECK(err[0] != '\0', "cfg_set(\"%s\") failed without a message", set);
      char *after = cfg_to_yaml(&c);
      FUZZ_CHECK(after && strcmp(before, after) == 0, "a failed cfg_set(\"%s\") changed the config",
                 set);
      free(after);
    }
  }
  free(before);

  err[0] = '\0';
  if (cfg_validate(&c, err, sizeof err) == 0) {
    for (int ranks = 1; ranks <= 3; ranks++)
      if (cfg_check_ranks(&c, ranks, err, sizeof err) != 0)
        FUZZ_CHECK(err[0] != '\0', "cfg_check_ranks failed without a message");
    nn_layer_spec *specs = NULL;
    int count = 0;
    nn_shape input;
    err[0] = '\0';
    if (cfg_model_specs(&c, &specs, &count, &input, err, sizeof err) == 0) {
      FUZZ_CHECK(count > 0 && specs != NULL, "a valid model with %d layers", count);
      FUZZ_CHECK(input.c >= 1 && input.h >= 1 && input.w >= 1, "input %dx%dx%d", input.c, input.h,
                 input.w);
    } else {
      FUZZ_CHECK(err[0] != '\0', "cfg_model_specs failed without a message");
    }
    free(specs);
    for (int k = 0; k <= 16; k++) {
      double epoch = c.train.epochs * (double)k / 16.0;
      double lr = cfg_lr_at(&c, epoch);
      FUZZ_CHECK(isfinite(lr) && lr >= 0, "lr %g at epoch %g", lr, epoch);
    }
  } else {
    FUZZ_CHECK(err[0] != '\0', "cfg_validate failed without a message");
  }
  cfg_free(&c);
  free(text);
  return 0;
}
