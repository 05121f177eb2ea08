/*
 * launch/metrics.c: the console lines and metrics.jsonl of train and eval.
 */
#include "metrics.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"

void metrics_format_eta(double seconds, char *out, size_t len) {
  if (!(seconds >= 0) || seconds > 1e8) {
    snprintf(out, len, "?");
  } else if (seconds >= 3600) {
    snprintf(out, len, "%dh%02dm", (int)(seconds / 3600), (int)fmod(seconds / 60, 60));
  } else {
    snprintf(out, len, "%dm%02ds", (int)(seconds / 60), (int)fmod(seconds, 60));
  }
}

void metrics_open(metrics_log *m, const char *tool, const char *run_dir, const char *run_id,
                  int64_t steps_per_epoch, int epochs) {
  memset(m, 0, sizeof *m);
  snprintf(m->run, sizeof m->run, "%s", run_id);
  m->steps_per_epoch = steps_per_epoch;
  m->epochs = epochs;
  if (dist_rank() != 0) return;
  m->tty = isatty(STDERR_FILENO);
  char path[4200];
  snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
  m->jsonl = fopen(path, "a");
  if (!m->jsonl)
    fprintf(stderr, "%s: cannot append to %s; metrics go to stdout only\n", tool, path);
}

void metrics_train(metrics_log *m, const metrics_step *s, int log) {
  if (dist_rank() != 0 || !(log || m->tty)) return;
  char eta[32];
  metrics_format_eta(s->eta_s, eta, sizeof eta);
  if (m->tty) {
    fprintf(stderr,
            "\repoch %lld/%d step %lld/%lld loss %.4f top-1 %.1f%% lr %.5g %.1f images/s ETA %s   ",
            (long long)s->epoch + 1, m->epochs, (long long)s->step_in_epoch,
            (long long)m->steps_per_epoch, s->loss, 100 * s->top1, s->lr, s->images_per_sec, eta);
    fflush(stderr);
  } else {
    printf(
        "train epoch %lld/%d step %lld/%lld (global %lld) loss %.4f top-1 %.1f%% "
        "lr %.5g %.1f images/s ETA %s\n",
        (long long)s->epoch + 1, m->epochs, (long long)s->step_in_epoch,
        (long long)m->steps_per_epoch, (long long)s->step, s->loss, 100 * s->top1, s->lr,
        s->images_per_sec, eta);
    fflush(stdout);
  }
  if (log && m->jsonl) {
    fprintf(m->jsonl,
            "{\"step\":%lld,\"epoch\":%lld,\"split\":\"train\",\"loss\":%.6f,\"top1\":%.6f,"
            "\"top5\":%.6f,\"lr\":%.8g,\"images_per_sec\":%.2f,\"data_ms\":%.3f,"
            "\"forward_ms\":%.3f,\"backward_ms\":%.3f,\"comm_ms\":%.3f,\"update_ms\":%.3f",
            (long long)s->step, (long long)s->epoch, s->loss, s->top1, s->top5, s->lr,
            s->images_per_sec, s->data_ms, s->forward_ms, s->backward_ms, s->comm_ms, s->update_ms);
    metrics_run_json(m->jsonl, m->run);
    fputs("}\n", m->jsonl);
    fflush(m->jsonl);
  }
}

void metrics_val_json(FILE *f, int64_t step, int64_t epoch, const eval_result *r) {
  fprintf(f,
          "{\"step\":%lld,\"epoch\":%lld,\"split\":\"val\",\"loss\":%.6f,\"top1\":%.6f,"
          "\"top5\":%.6f,\"samples\":%lld,\"images_per_sec\":%.2f",
          (long long)step, (long long)epoch, r->loss, r->top1, r->top5, (long long)r->samples,
          r->images_per_sec);
}

void metrics_val(metrics_log *m, int64_t step, int64_t epoch, const eval_result *r) {
  if (dist_rank() != 0) return;
  metrics_newline(m);
  printf(
      "val   epoch %lld step %lld: loss %.4f top-1 %.2f%% top-5 %.2f%% (%lld samples, "
      "%.1f images/s)\n",
      (long long)epoch + 1, (long long)step, r->loss, 100 * r->top1, 100 * r->top5,
      (long long)r->samples, r->images_per_sec);
  fflush(stdout);
  if (m->jsonl) {
    metrics_val_json(m->jsonl, step, epoch, r);
    metrics_run_json(m->jsonl, m->run);
    fputs("}\n", m->jsonl);
    fflush(m->jsonl);
  }
}

void metrics_newline(metrics_log *m) {
  if (m->tty) fprintf(stderr, "\n");
}

void metrics_close(metrics_log *m) {
  if (m->jsonl) fclose(m->jsonl);
  m->jsonl = NULL;
}

void metrics_run_json(FILE *f, const char *run_id) {
  /* Run ids are hex digits (trainer.c) or a checkpoint's attribute: escape
   * what JSON cannot hold as is. */
  fputs(",\"run\":\"", f);
  for (const unsigned char *p = (const unsigned char *)run_id; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}
