/* gw_router.h: which handler answers a request path, and query strings.
 *
 * Pure functions over the request target; no I/O. The path is matched
 * without its query string and without percent-decoding, because no API path
 * segment may contain an escaped character: device ids are [A-Za-z0-9_.-]
 * and command ids [A-Za-z0-9_.:-], so an id with '%' in it is simply unknown
 * (404). Static files are matched last, by gw_static.
 */
#ifndef GW_ROUTER_H
#define GW_ROUTER_H

#include <stddef.h>

#define GW_ID_MAX 64

typedef enum {
    GW_R_NOT_FOUND = 0,
    GW_R_STATIC,           /* GET/HEAD anything outside /api/ and /ws/ */
    GW_R_HEALTHZ,          /* GET /healthz */
    GW_R_METRICS,          /* GET /metrics */
    GW_R_LOGIN,            /* POST /api/login */
    GW_R_LOGOUT,           /* POST /api/logout */
    GW_R_ME,               /* GET /api/me */
    GW_R_DEVICES,          /* GET /api/devices */
    GW_R_DEVICE,           /* GET /api/devices/{id} */
    GW_R_DEVICE_TELEMETRY, /* GET /api/devices/{id}/telemetry */
    GW_R_DEVICE_COMMANDS,  /* GET, POST /api/devices/{id}/commands */
    GW_R_DEVICE_SESSIONS,  /* GET /api/devices/{id}/sessions */
    GW_R_COMMAND,          /* GET /api/commands/{command_id} */
    GW_R_WS_DEVICE,        /* GET /ws/device/{id} (upgrade) */
    GW_R_WS_DASHBOARD,     /* GET /ws/dashboard (upgrade) */
    GW_R_DEVICE_ENERGY,    /* GET /api/devices/{id}/energy */
    GW_R_ENERGY,           /* GET /api/energy (the fleet's total) */
    GW_R_ALARMS,           /* GET /api/alarms */
    GW_R_ALARM_ACK,        /* POST /api/alarms/{alarm_id}/ack */
    GW_R_DEVICE_ALARMS,    /* GET /api/devices/{id}/alarms */
} gw_route_id_t;

enum { GW_M_GET = 1, GW_M_HEAD = 2, GW_M_POST = 4 };

typedef struct {
    gw_route_id_t id;
    unsigned methods;         /* GW_M_* allowed on this route */
    char id1[GW_ID_MAX + 1]; /* device id or command id, when the route has one */
} gw_route_t;

/* Matches `len` bytes of a request path (no query). Always fills *r; a path
 * that names no resource gives GW_R_NOT_FOUND. */
void gw_router_match(const char *path, size_t len, gw_route_t *r);

/* GW_M_* of a method name ("GET"...), or 0 for any other method. */
unsigned gw_router_method(const char *name);

/* The "Allow" header value of a methods mask, e.g. "GET, HEAD". */
const char *gw_router_allow(unsigned methods);

/* Percent-decodes `len` bytes into out (NUL-terminated); '+' is a space
 * when `plus` is set (query strings). Refuses malformed escapes and %00.
 * Returns the decoded length, EMS_EINVAL or EMS_ENOSPC. */
int gw_pct_decode(const char *in, size_t len, char *out, size_t cap, int plus);

/* Finds `key` in a query string "a=1&b=2" (no leading '?') and decodes its
 * value into out. Returns the length, EMS_ENOENT if absent, EMS_EINVAL or
 * EMS_ENOSPC. The first occurrence wins. */
int gw_query_get(const char *query, size_t qlen, const char *key, char *out, size_t cap);

/* Checks a command id: 1..64 of [A-Za-z0-9_.:-]. */
int gw_command_id_valid(const char *id, size_t len);

#endif
