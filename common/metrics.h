/* metrics.h: a small Prometheus metrics registry and its text format.
 *
 * Series are registered once at start-up (family name, help, type and a
 * fixed label text such as `endpoint="device"`), and the caller keeps the
 * returned pointer; updating a series is then a plain add on the loop
 * thread, with no lookup and no lock (each daemon is single-threaded).
 * Gauges that are cheaper to compute when scraped (queue depths, open
 * connections) take a callback instead. ems_metrics_render writes the
 * exposition format version 0.0.4 (one HELP and TYPE line per family, the
 * series in registration order, histograms with cumulative buckets, _sum
 * and _count).
 *
 * The registry owns every series; pointers stay valid until
 * ems_metrics_free.
 */
#ifndef EMS_METRICS_H
#define EMS_METRICS_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { EMS_METRIC_COUNTER, EMS_METRIC_GAUGE, EMS_METRIC_HISTOGRAM } ems_metric_type_t;

typedef struct ems_metric {
    double value;           /* counter or gauge */
    double (*fn)(void *ud); /* gauge computed at scrape time, or NULL */
    void *ud;
    const double *bounds; /* histogram upper bounds, ascending */
    size_t nbounds;
    uint64_t *buckets; /* nbounds counts (not cumulative) */
    double sum;
    uint64_t count;
    char *labels; /* e.g. endpoint="device"; may be empty */
    struct ems_metric *next;
} ems_metric_t;

typedef struct ems_metrics ems_metrics_t;

ems_metrics_t *ems_metrics_new(void);
void ems_metrics_free(ems_metrics_t *m);

/* Registers a series; the family is created on first use of `name` (and
 * `help`/type must then agree). `labels` may be NULL. Returns NULL only on
 * allocation failure or a type clash. */
ems_metric_t *ems_metrics_counter(ems_metrics_t *m, const char *name, const char *help,
                                  const char *labels);
ems_metric_t *ems_metrics_gauge(ems_metrics_t *m, const char *name, const char *help,
                                const char *labels);
ems_metric_t *ems_metrics_gauge_fn(ems_metrics_t *m, const char *name, const char *help,
                                   const char *labels, double (*fn)(void *), void *ud);
/* `bounds` must outlive the registry (a static array). */
ems_metric_t *ems_metrics_histogram(ems_metrics_t *m, const char *name, const char *help,
                                    const char *labels, const double *bounds, size_t nbounds);

static inline void ems_metric_add(ems_metric_t *s, double v)
{
    if (s)
        s->value += v;
}
static inline void ems_metric_inc(ems_metric_t *s)
{
    ems_metric_add(s, 1.0);
}
static inline void ems_metric_set(ems_metric_t *s, double v)
{
    if (s)
        s->value = v;
}
void ems_metric_observe(ems_metric_t *s, double v);

/* Appends every family to `out` (no NUL). Returns 0 or the buffer's error
 * (EMS_ENOMEM, EMS_ENOSPC); on error part of the text may be appended. */
int ems_metrics_render(const ems_metrics_t *m, ems_buf_t *out);

#endif
