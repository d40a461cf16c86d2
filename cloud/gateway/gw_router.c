/* gw_router.c: request routing (see gw_router.h). */
#include "gw_router.h"

#include "error.h"
#include "telemetry.h"

#include <ctype.h>
#include <string.h>

int gw_command_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > GW_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* True when path[0..len) starts with `lit`; advances past it. */
static int eat(const char **p, size_t *len, const char *lit)
{
    size_t n = strlen(lit);
    if (*len < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    *len -= n;
    return 1;
}

static int is(const char *p, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(p, lit, len) == 0;
}

/* Takes one segment up to '/' or the end into r->id1 if it is a valid id. */
static int take_id(const char **p, size_t *len, gw_route_t *r, int command)
{
    size_t n = 0;
    while (n < *len && (*p)[n] != '/')
        n++;
    int ok = command ? gw_command_id_valid(*p, n) : ems_device_id_valid(*p, n);
    if (!ok)
        return 0;
    memcpy(r->id1, *p, n);
    r->id1[n] = '\0';
    *p += n;
    *len -= n;
    return 1;
}

static void set(gw_route_t *r, gw_route_id_t id, unsigned methods)
{
    r->id = id;
    r->methods = methods;
}

void gw_router_match(const char *path, size_t len, gw_route_t *r)
{
    memset(r, 0, sizeof *r);
    const char *p = path;
    if (is(p, len, "/healthz"))
        return set(r, GW_R_HEALTHZ, GW_M_GET | GW_M_HEAD);
    if (is(p, len, "/metrics"))
        return set(r, GW_R_METRICS, GW_M_GET | GW_M_HEAD);
    if (eat(&p, &len, "/ws/")) {
        if (is(p, len, "dashboard"))
            return set(r, GW_R_WS_DASHBOARD, GW_M_GET);
        if (eat(&p, &len, "device/") && take_id(&p, &len, r, 0) && len == 0)
            return set(r, GW_R_WS_DEVICE, GW_M_GET);
        return set(r, GW_R_NOT_FOUND, 0);
    }
    if (is(p, len, "/ws") || is(p, len, "/api"))
        return set(r, GW_R_NOT_FOUND, 0);
    if (!eat(&p, &len, "/api/"))
        return set(r, GW_R_STATIC, GW_M_GET | GW_M_HEAD);
    if (is(p, len, "login"))
        return set(r, GW_R_LOGIN, GW_M_POST);
    if (is(p, len, "logout"))
        return set(r, GW_R_LOGOUT, GW_M_POST);
    if (is(p, len, "me"))
        return set(r, GW_R_ME, GW_M_GET | GW_M_HEAD);
    if (is(p, len, "devices"))
        return set(r, GW_R_DEVICES, GW_M_GET | GW_M_HEAD);
    if (is(p, len, "energy"))
        return set(r, GW_R_ENERGY, GW_M_GET | GW_M_HEAD);
    if (is(p, len, "alarms"))
        return set(r, GW_R_ALARMS, GW_M_GET | GW_M_HEAD);
    if (eat(&p, &len, "alarms/")) {
        /* An alarm id: decimal digits (the database's bigserial). */
        size_t n = 0;
        while (n < len && n < 19 && p[n] >= '0' && p[n] <= '9')
            n++;
        if (n > 0 && p[0] != '0' && is(p + n, len - n, "/ack")) {
            memcpy(r->id1, p, n);
            r->id1[n] = '\0';
            return set(r, GW_R_ALARM_ACK, GW_M_POST);
        }
        return set(r, GW_R_NOT_FOUND, 0);
    }
    if (eat(&p, &len, "commands/")) {
        if (take_id(&p, &len, r, 1) && len == 0)
            return set(r, GW_R_COMMAND, GW_M_GET | GW_M_HEAD);
        return set(r, GW_R_NOT_FOUND, 0);
    }
    if (eat(&p, &len, "devices/") && take_id(&p, &len, r, 0)) {
        if (len == 0)
            return set(r, GW_R_DEVICE, GW_M_GET | GW_M_HEAD);
        if (is(p, len, "/telemetry"))
            return set(r, GW_R_DEVICE_TELEMETRY, GW_M_GET | GW_M_HEAD);
        if (is(p, len, "/commands"))
            return set(r, GW_R_DEVICE_COMMANDS, GW_M_GET | GW_M_HEAD | GW_M_POST);
        if (is(p, len, "/sessions"))
            return set(r, GW_R_DEVICE_SESSIONS, GW_M_GET | GW_M_HEAD);
        if (is(p, len, "/energy"))
            return set(r, GW_R_DEVICE_ENERGY, GW_M_GET | GW_M_HEAD);
        if (is(p, len, "/alarms"))
            return set(r, GW_R_DEVICE_ALARMS, GW_M_GET | GW_M_HEAD);
    }
    r->id1[0] = '\0';
    return set(r, GW_R_NOT_FOUND, 0);
}

unsigned gw_router_method(const char *name)
{
    if (!strcmp(name, "GET"))
        return GW_M_GET;
    if (!strcmp(name, "HEAD"))
        return GW_M_HEAD;
    if (!strcmp(name, "POST"))
        return GW_M_POST;
    return 0;
}

const char *gw_router_allow(unsigned m)
{
    switch (m & (GW_M_GET | GW_M_HEAD | GW_M_POST)) {
    case GW_M_GET:
        return "GET";
    case GW_M_POST:
        return "POST";
    case GW_M_GET | GW_M_HEAD:
        return "GET, HEAD";
    case GW_M_GET | GW_M_HEAD | GW_M_POST:
        return "GET, HEAD, POST";
    case GW_M_GET | GW_M_POST:
        return "GET, POST";
    default:
        return "";
    }
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int gw_pct_decode(const char *in, size_t len, char *out, size_t cap, int plus)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= len)
                return EMS_EINVAL;
            int hi = hexv(in[i + 1]), lo = hexv(in[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return EMS_EINVAL;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        } else if (c == '\0') {
            return EMS_EINVAL;
        }
        if (o + 1 >= cap)
            return EMS_ENOSPC;
        out[o++] = c;
    }
    if (o >= cap)
        return EMS_ENOSPC;
    out[o] = '\0';
    return (int)o;
}

int gw_query_get(const char *q, size_t qlen, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key), i = 0;
    while (i < qlen) {
        size_t start = i;
        while (i < qlen && q[i] != '&')
            i++;
        const char *pair = q + start;
        size_t plen = i - start;
        if (plen >= klen && memcmp(pair, key, klen) == 0 && (plen == klen || pair[klen] == '=')) {
            if (plen == klen) {
                if (cap == 0)
                    return EMS_ENOSPC;
                out[0] = '\0';
                return 0;
            }
            return gw_pct_decode(pair + klen + 1, plen - klen - 1, out, cap, 1);
        }
        i++;
    }
    return EMS_ENOENT;
}
