/* gw_metrics.h: a small Prometheus metrics registry and its text format.
 *
 * Series are registered once at start-up (family name, help, type and a
 * fixed label text such as `endpoint="device"`), and the caller keeps the
 * returned pointer; updating a series is then a plain add on the loop
 * thread, with no lookup and no lock (the gateway is single-threaded).
 * Gauges that are cheaper to compute when scraped (queue depths, open
 * connections) take a callback instead. gw_metrics_render writes the
 * exposition format version 0.0.4 (one HELP and TYPE line per family, the
 * series in registration order, histograms with cumulative buckets, _sum
 * and _count).
 *
 * The registry owns every series; pointers stay valid until
 * gw_metrics_free.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { GW_MT_COUNTER, GW_MT_GAUGE, GW_MT_HISTOGRAM } gw_metric_type_t;

typedef struct gw_metric {
    double value;                  /* counter or gauge */
    double (*fn)(void *ud);        /* gauge computed at scrape time, or NULL */
    void *ud;
    const double *bounds;          /* histogram upper bounds, ascending */
    size_t nbounds;
    uint64_t *buckets;             /* nbounds counts (not cumulative) */
    double sum;
    uint64_t count;
    char *labels;                  /* e.g. endpoint="device"; may be empty */
    struct gw_metric *next;
} gw_metric_t;

typedef struct gw_metrics gw_metrics_t;

gw_metrics_t *gw_metrics_new(void);
void gw_metrics_free(gw_metrics_t *m);

/* Registers a series; the family is created on first use of `name` (and
 * `help`/type must then agree). `labels` may be NULL. Returns NULL only on
 * allocation failure or a type clash. */
gw_metric_t *gw_metrics_counter(gw_metrics_t *m, const char *name, const char *help,
                                const char *labels);
gw_metric_t *gw_metrics_gauge(gw_metrics_t *m, const char *name, const char *help,
                              const char *labels);
gw_metric_t *gw_metrics_gauge_fn(gw_metrics_t *m, const char *name, const char *help,
                                 const char *labels, double (*fn)(void *), void *ud);
/* `bounds` must outlive the registry (a static array). */
gw_metric_t *gw_metrics_histogram(gw_metrics_t *m, const char *name, const char *help,
                                  const char *labels, const double *bounds, size_t nbounds);

static inline void gw_metric_add(gw_metric_t *s, double v)
{
    if (s)
        s->value += v;
}
static inline void gw_metric_inc(gw_metric_t *s) { gw_metric_add(s, 1.0); }
static inline void gw_metric_set(gw_metric_t *s, double v)
{
    if (s)
        s->value = v;
}
void gw_metric_observe(gw_metric_t *s, double v);

/* Renders every family into a new buffer (caller frees). Returns 0 or
 * EMS_ENOMEM. */
int gw_metrics_render(gw_metrics_t *m, char **out, size_t *len);

#endif
