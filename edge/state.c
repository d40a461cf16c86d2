/* state.c: the edge's persisted state file (see state.h). */
#include "state.h"

#include "crc32c.h"
#include "error.h"
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATE__MAX 4096 /* the file is a few lines; anything larger is not ours */

/* The energy keys, in the order of energy_mwh[] (edge/energy.h). */
static const char *const state__energy_keys[EMS_EDGE_STATE_ENERGY] = {
    "energy_battery_charged_mwh", "energy_battery_discharged_mwh", "energy_grid_import_mwh",
    "energy_grid_export_mwh"};
#define STATE__ENERGY_ALL 0x1f /* the four counters and energy_since_ms */

int ems_edge_state_path(const char *buffer_path, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s.state", buffer_path);
    return n < 0 || (size_t)n >= cap ? EMS_ENOSPC : 0;
}

static int state__damaged(ems_edge_state_t *out, int rc)
{
    memset(out, 0, sizeof *out);
    out->error_latched = true;
    return rc;
}

/* Parses "OVERHEAT,SENSOR_FAULT" (or "none"). */
static int state__flags(char *v, uint32_t *out)
{
    *out = 0;
    if (strcmp(v, "none") == 0)
        return 0;
    for (char *save = NULL, *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        uint32_t bit;
        if (ems_fault_parse(t, &bit) < 0)
            return EMS_EINVAL;
        *out |= bit;
    }
    return 0;
}

/* One energy line; *seen collects which of the five were read. Returns 1
 * when `key` is an energy key, 0 when it is not, EMS_EINVAL for a bad value. */
static int state__energy(const char *key, const char *v, ems_edge_state_t *st, unsigned *seen)
{
    int bit = -1;
    for (int i = 0; i < EMS_EDGE_STATE_ENERGY; i++)
        if (strcmp(key, state__energy_keys[i]) == 0)
            bit = i;
    if (bit < 0 && strcmp(key, "energy_since_ms") == 0)
        bit = EMS_EDGE_STATE_ENERGY;
    if (bit < 0)
        return 0;
    /* Digits only: strtoull would take "-1" as 2^64-1. */
    if (!v[0] || strspn(v, "0123456789") != strlen(v) || strlen(v) > 18)
        return EMS_EINVAL;
    unsigned long long n = strtoull(v, NULL, 10);
    if (bit == EMS_EDGE_STATE_ENERGY)
        st->energy_since_ms = (int64_t)n;
    else
        st->energy_mwh[bit] = n;
    *seen |= 1u << bit;
    return 1;
}

static int state__line(char *line, ems_edge_state_t *st, char *err, size_t cap, int lineno,
                       const char *path, unsigned *energy_seen)
{
    char *eq = strstr(line, " = ");
    if (!eq) {
        snprintf(err, cap, "%s:%d: not `key = value`", path, lineno);
        return EMS_EINVAL;
    }
    *eq = '\0';
    char *key = line, *v = eq + 3, *end = NULL;
    errno = 0;
    int erc = state__energy(key, v, st, energy_seen);
    if (erc < 0)
        goto bad;
    if (erc > 0) {
        return 0;
    } else if (strcmp(key, "error_latched") == 0) {
        if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
            goto bad;
        st->error_latched = v[0] == '1';
    } else if (strcmp(key, "error_flags") == 0) {
        if (state__flags(v, &st->error_flags) < 0)
            goto bad;
    } else if (strcmp(key, "error_since_ms") == 0 || strcmp(key, "soc_saved_ms") == 0) {
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end || n < 0)
            goto bad;
        if (key[0] == 'e')
            st->error_since_ms = n;
        else
            st->soc_saved_ms = n;
    } else if (strcmp(key, "soc") == 0) {
        double d = strtod(v, &end);
        if (errno || end == v || *end || !(d >= 0 && d <= 100))
            goto bad;
        st->soc = d;
        st->has_soc = true;
    } else {
        snprintf(err, cap, "%s:%d: unknown key '%s'", path, lineno, key);
        return EMS_EINVAL;
    }
    return 0;
bad:
    snprintf(err, cap, "%s:%d: bad value for %s: '%s'", path, lineno, key, v);
    return EMS_EINVAL;
}

int ems_edge_state_load(const char *path, ems_edge_state_t *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return EMS_ENOENT;
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return state__damaged(out, EMS_EIO);
    }
    char buf[STATE__MAX + 1];
    size_t n = fread(buf, 1, sizeof buf, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        snprintf(err, cap, "%s: read error", path);
        return state__damaged(out, EMS_EIO);
    }
    if (n > STATE__MAX) {
        snprintf(err, cap, "%s: larger than %d bytes", path, STATE__MAX);
        return state__damaged(out, EMS_EINVAL);
    }
    buf[n] = '\0';
    /* The checksum line is the last one and covers every byte before it. */
    char *crc_line = strstr(buf, "crc32c = ");
    unsigned long want;
    char *end = NULL;
    if (!crc_line || (crc_line != buf && crc_line[-1] != '\n') ||
        (want = strtoul(crc_line + 9, &end, 16), end == crc_line + 9) ||
        (*end != '\n' && *end != '\0') || (*end == '\n' && end[1] != '\0')) {
        snprintf(err, cap, "%s: no checksum line at the end (torn or edited file)", path);
        return state__damaged(out, EMS_EINVAL);
    }
    uint32_t got = ems_crc32c(0, buf, (size_t)(crc_line - buf));
    if (got != (uint32_t)want) {
        snprintf(err, cap, "%s: checksum mismatch (file says %08lx, content gives %08" PRIx32 ")",
                 path, want, got);
        return state__damaged(out, EMS_EINVAL);
    }
    *crc_line = '\0';
    int lineno = 0;
    unsigned energy_seen = 0;
    for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (l[0] == '#' || l[0] == '\0')
            continue;
        int rc = state__line(l, out, err, cap, lineno, path, &energy_seen);
        if (rc < 0)
            return state__damaged(out, rc);
    }
    if (energy_seen != 0 && energy_seen != STATE__ENERGY_ALL) {
        snprintf(err, cap, "%s: some energy lines are missing (all five or none)", path);
        return state__damaged(out, EMS_EINVAL);
    }
    out->has_energy = energy_seen == STATE__ENERGY_ALL;
    return 0;
}

static int state__fail(char *err, size_t cap, const char *what, const char *path, int fd)
{
    int e = errno;
    snprintf(err, cap, "%s %s: %s", what, path, strerror(e));
    if (fd >= 0)
        close(fd);
    return e == ENOSPC ? EMS_ENOSPC : EMS_EIO;
}

int ems_edge_state_save(const char *path, const ems_edge_state_t *st, bool sync, char *err,
                        size_t cap)
{
    char text[STATE__MAX];
    char flags[160] = "none";
    if (st->error_flags) {
        size_t used = 0;
        flags[0] = '\0';
        for (unsigned i = 0; i < EMS_FAULT_COUNT; i++)
            if (st->error_flags & (1u << i))
                used += (size_t)snprintf(flags + used, sizeof flags - used, "%s%s", used ? "," : "",
                                         ems_fault_name(1u << i));
    }
    int n = snprintf(text, sizeof text,
                     "# ems-edge state (written by the daemon; edit only while it is stopped)\n"
                     "error_latched = %d\nerror_flags = %s\nerror_since_ms = %" PRId64 "\n",
                     st->error_latched ? 1 : 0, flags, st->error_since_ms);
    if (st->has_soc && isfinite(st->soc))
        n += snprintf(text + n, sizeof text - (size_t)n, "soc = %.3f\nsoc_saved_ms = %" PRId64 "\n",
                      st->soc < 0     ? 0
                      : st->soc > 100 ? 100
                                      : st->soc,
                      st->soc_saved_ms);
    if (st->has_energy) {
        n += snprintf(text + n, sizeof text - (size_t)n, "energy_since_ms = %" PRId64 "\n",
                      st->energy_since_ms < 0 ? 0 : st->energy_since_ms);
        for (int i = 0; i < EMS_EDGE_STATE_ENERGY; i++)
            n += snprintf(text + n, sizeof text - (size_t)n, "%s = %" PRIu64 "\n",
                          state__energy_keys[i], st->energy_mwh[i]);
    }
    n += snprintf(text + n, sizeof text - (size_t)n, "crc32c = %08" PRIx32 "\n",
                  ems_crc32c(0, text, (size_t)n));

    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        snprintf(err, cap, "%s: path too long", path);
        return EMS_ENOSPC;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return state__fail(err, cap, "open", tmp, -1);
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(fd, text + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return state__fail(err, cap, "write", tmp, fd);
        off += w;
    }
    if (sync && fsync(fd) < 0)
        return state__fail(err, cap, "fsync", tmp, fd);
    if (close(fd) < 0)
        return state__fail(err, cap, "close", tmp, -1);
    if (rename(tmp, path) < 0)
        return state__fail(err, cap, "rename to", path, -1);
    if (sync) {
        /* The rename itself must reach the disk, or a power cut may bring
         * back the old file. */
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", path);
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return 0;
}
