#include "log.h"

#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The only process-wide state outside main (see log.h). */
static struct {
    const char *ident;
    ems_log_level_t level;
    int with_time;
} ems_log__cfg = {"ems", EMS_LOG_INFO, 1};

static int ems_log__stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void ems_log_init(const char *ident, ems_log_level_t level)
{
    ems_log__cfg.ident = ident ? ident : "ems";
    ems_log__cfg.level = level;
    /* Under systemd, JOURNAL_STREAM names the device and inode of the
     * journal socket and journald adds its own time. The variable is
     * inherited by children whose stderr may go elsewhere (a file), so the
     * time is left out only when stderr really is that stream. */
    ems_log__cfg.with_time = !ems_log__stderr_is_journal();
}

void ems_log_set_level(ems_log_level_t level) { ems_log__cfg.level = level; }

ems_log_level_t ems_log_get_level(void) { return ems_log__cfg.level; }

int ems_log_level_parse(const char *s, ems_log_level_t *out)
{
    static const struct {
        const char *name;
        ems_log_level_t level;
    } names[] = {{"error", EMS_LOG_ERROR},
                 {"warn", EMS_LOG_WARN},
                 {"warning", EMS_LOG_WARN},
                 {"info", EMS_LOG_INFO},
                 {"debug", EMS_LOG_DEBUG}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (s && strcmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return EMS_EINVAL;
}

static void ems_log__v(ems_log_level_t level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

void ems_log(ems_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ems_log__v(level, fmt, ap);
    va_end(ap);
}

void ems_log_limit_flush(ems_log_limit_t *l, int64_t now_ms)
{
    if (!l->started || now_ms - l->start_ms < l->interval_ms)
        return;
    if (l->suppressed > 0)
        ems_log(l->level, "%s: and %llu more in the last %lld s", l->what ? l->what : "repeated",
                (unsigned long long)l->suppressed,
                (long long)((now_ms - l->start_ms + 999) / 1000));
    l->started = false;
    l->suppressed = 0;
}

bool ems_log_limited(ems_log_limit_t *l, int64_t now_ms, ems_log_level_t level, const char *fmt,
                     ...)
{
    ems_log_limit_flush(l, now_ms);
    if (l->started && l->written >= (l->burst ? l->burst : 1)) {
        l->suppressed++;
        return false;
    }
    if (!l->started) {
        l->started = true;
        l->start_ms = now_ms;
        l->written = 0;
        if (l->interval_ms <= 0)
            l->interval_ms = 10000;
    }
    l->written++;
    l->level = level;
    va_list ap;
    va_start(ap, fmt);
    ems_log__v(level, fmt, ap);
    va_end(ap);
    return true;
}

static void ems_log__v(ems_log_level_t level, const char *fmt, va_list ap)
{
    if (level > ems_log__cfg.level)
        return;
    static const char *const tag[8] = {"", "", "", "error", "warn", "", "info", "debug"};
    char line[2048];
    size_t n = (size_t)snprintf(line, sizeof line, "<%d>", (int)level);
    if (ems_log__cfg.with_time) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n += strftime(line + n, sizeof line - n, "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    n += (size_t)snprintf(line + n, sizeof line - n, "%s %s: ", ems_log__cfg.ident,
                          tag[level & 7]);
    if (n < sizeof line) {
        int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
        if (m > 0)
            n += (size_t)m;
    }
    if (n > sizeof line - 2)
        n = sizeof line - 2; /* truncated: keep the newline */
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
