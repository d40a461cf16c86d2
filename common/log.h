/* log.h: logging to stderr in the form journald keeps.
 *
 * Each line starts with the syslog priority in angle brackets ("<4>"), which
 * journald turns into the entry's priority and strips; outside systemd the
 * line stays readable. With EMS_LOG_TIME set (the default when stderr is not
 * journald) a UTC timestamp follows. One line per call, written with a single
 * write(2) so lines from one process never interleave.
 *
 * The threshold lives in a process-wide variable that only main() sets
 * (ems_log_set_level); it is the one piece of global state the project
 * allows outside main, because every module logs.
 */
#ifndef EMS_LOG_H
#define EMS_LOG_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    EMS_LOG_ERROR = 3,
    EMS_LOG_WARN = 4,
    EMS_LOG_INFO = 6,
    EMS_LOG_DEBUG = 7,
} ems_log_level_t;

/* Sets the threshold (messages above it are dropped) and the program name
 * shown in each line. `ident` must outlive all logging (a string literal). */
void ems_log_init(const char *ident, ems_log_level_t level);
void ems_log_set_level(ems_log_level_t level);
ems_log_level_t ems_log_get_level(void);

/* Parses "error", "warn", "info", "debug". Returns 0 or EMS_EINVAL. */
int ems_log_level_parse(const char *s, ems_log_level_t *out);

void ems_log(ems_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A repeated warning, logged once and then summarised: the first line of
 * an interval is written, the rest are counted, and the next line (or
 * ems_log_limit_flush once the interval is over) says
 *   "WHAT: and 1999 more in the last 10 s".
 * An attacker who sends 2,000 bad requests then costs two log lines, not
 * 2,000. The caller owns the struct (zero-initialised, `what` a string
 * literal, `interval_ms` > 0) and passes monotonic milliseconds. */
typedef struct {
    const char *what;      /* names the kind of line in the summary */
    int64_t interval_ms;
    unsigned burst;        /* lines written per interval before counting (0: 1) */
    int64_t start_ms;      /* start of the current interval */
    unsigned written;      /* lines written in it */
    uint64_t suppressed;   /* lines dropped in it */
    ems_log_level_t level; /* of the summary line */
    bool started;
} ems_log_limit_t;

/* Logs like ems_log if this is one of the first `burst` lines of the
 * interval (after a summary of the previous interval's dropped lines, if
 * any); otherwise only counts it. Returns true if the line was written. */
bool ems_log_limited(ems_log_limit_t *l, int64_t now_ms, ems_log_level_t level, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));

/* Writes the summary of an interval that is over (call it now and then, e.g.
 * from a 1 s timer, so a burst that stopped is still reported). */
void ems_log_limit_flush(ems_log_limit_t *l, int64_t now_ms);

#define ems_log_error(...) ems_log(EMS_LOG_ERROR, __VA_ARGS__)
#define ems_log_warn(...) ems_log(EMS_LOG_WARN, __VA_ARGS__)
#define ems_log_info(...) ems_log(EMS_LOG_INFO, __VA_ARGS__)
#define ems_log_debug(...) ems_log(EMS_LOG_DEBUG, __VA_ARGS__)

#endif
