/* metrics.c: Prometheus registry (see metrics.h). */
#include "metrics.h"

#include "error.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct family {
    char *name, *help;
    ems_metric_type_t type;
    ems_metric_t *first, *last;
    struct family *next;
} family_t;

struct ems_metrics {
    family_t *first, *last;
};

ems_metrics_t *ems_metrics_new(void)
{
    return calloc(1, sizeof(ems_metrics_t));
}

void ems_metrics_free(ems_metrics_t *m)
{
    if (!m)
        return;
    for (family_t *f = m->first, *fn; f; f = fn) {
        fn = f->next;
        for (ems_metric_t *s = f->first, *sn; s; s = sn) {
            sn = s->next;
            free(s->labels);
            free(s->buckets);
            free(s);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    free(m);
}

static family_t *family(ems_metrics_t *m, const char *name, const char *help, ems_metric_type_t t)
{
    for (family_t *f = m->first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f->type == t ? f : NULL;
    family_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->type = t;
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    return f;
}

static ems_metric_t *series(ems_metrics_t *m, const char *name, const char *help,
                            ems_metric_type_t t, const char *labels)
{
    if (!m)
        return NULL;
    family_t *f = family(m, name, help, t);
    if (!f)
        return NULL;
    ems_metric_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->labels = strdup(labels ? labels : "");
    if (!s->labels) {
        free(s);
        return NULL;
    }
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    return s;
}

ems_metric_t *ems_metrics_counter(ems_metrics_t *m, const char *name, const char *help,
                                  const char *labels)
{
    return series(m, name, help, EMS_METRIC_COUNTER, labels);
}

ems_metric_t *ems_metrics_gauge(ems_metrics_t *m, const char *name, const char *help,
                                const char *labels)
{
    return series(m, name, help, EMS_METRIC_GAUGE, labels);
}

ems_metric_t *ems_metrics_gauge_fn(ems_metrics_t *m, const char *name, const char *help,
                                   const char *labels, double (*fn)(void *), void *ud)
{
    ems_metric_t *s = series(m, name, help, EMS_METRIC_GAUGE, labels);
    if (s) {
        s->fn = fn;
        s->ud = ud;
    }
    return s;
}

ems_metric_t *ems_metrics_histogram(ems_metrics_t *m, const char *name, const char *help,
                                    const char *labels, const double *bounds, size_t nbounds)
{
    ems_metric_t *s = series(m, name, help, EMS_METRIC_HISTOGRAM, labels);
    if (s) {
        s->bounds = bounds;
        s->nbounds = nbounds;
        s->buckets = calloc(nbounds ? nbounds : 1, sizeof *s->buckets);
        if (!s->buckets)
            s->nbounds = 0; /* still counts _sum and _count */
    }
    return s;
}

void ems_metric_observe(ems_metric_t *s, double v)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nbounds; i++) {
        if (v <= s->bounds[i]) {
            s->buckets[i]++;
            break;
        }
    }
    s->sum += v;
    s->count++;
}

/* Rendering appends to an ems_buf_t; the first error is kept and every
 * later append skipped, so render checks once at the end. */
typedef struct {
    ems_buf_t *b;
    int rc;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...)
{
    if (o->rc)
        return;
    va_list ap;
    va_start(ap, fmt);
    o->rc = ems_buf_vappendf(o->b, fmt, ap);
    va_end(ap);
}

/* Prometheus numbers: integers without a fraction, others with %.17g. */
static void num(out_t *o, double v)
{
    if (isnan(v))
        put(o, "NaN");
    else if (isinf(v))
        put(o, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        put(o, "%.0f", v);
    else
        put(o, "%.17g", v);
}

static void sample(out_t *o, const char *name, const char *suffix, const char *labels,
                   const char *extra, double v)
{
    put(o, "%s%s", name, suffix);
    if (labels[0] || extra[0])
        put(o, "{%s%s%s}", labels, labels[0] && extra[0] ? "," : "", extra);
    put(o, " ");
    num(o, v);
    put(o, "\n");
}

static const char *type_name(ems_metric_type_t t)
{
    return t == EMS_METRIC_COUNTER ? "counter" : t == EMS_METRIC_GAUGE ? "gauge" : "histogram";
}

int ems_metrics_render(const ems_metrics_t *m, ems_buf_t *out)
{
    out_t o = {out, 0};
    for (family_t *f = m->first; f; f = f->next) {
        put(&o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, type_name(f->type));
        for (ems_metric_t *s = f->first; s; s = s->next) {
            if (f->type != EMS_METRIC_HISTOGRAM) {
                sample(&o, f->name, "", s->labels, "", s->fn ? s->fn(s->ud) : s->value);
                continue;
            }
            uint64_t cum = 0;
            char le[64];
            for (size_t i = 0; i < s->nbounds; i++) {
                cum += s->buckets[i];
                snprintf(le, sizeof le, "le=\"%g\"", s->bounds[i]);
                sample(&o, f->name, "_bucket", s->labels, le, (double)cum);
            }
            sample(&o, f->name, "_bucket", s->labels, "le=\"+Inf\"", (double)s->count);
            sample(&o, f->name, "_sum", s->labels, "", s->sum);
            sample(&o, f->name, "_count", s->labels, "", (double)s->count);
        }
    }
    return o.rc;
}
