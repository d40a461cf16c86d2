/* gw_api_int.h: what the REST API's files (gw_api*.c) share, and nothing
 * else includes: the request context of handlers that wait for the DB
 * writer, the reply helpers, and the resource handlers gw_api.c
 * dispatches to.
 */
#ifndef GW_API_INT_H
#define GW_API_INT_H

#include "auth.h"
#include "gw.h"

#include <jansson.h>

#define RANGE_MAX_MS (400LL * 86400 * 1000) /* longest history/energy range */

/* A request context for handlers that wait for the DB writer. */
typedef struct {
    gw_t *gw;
    ems_server_req_t *req;
    gw_route_t route;
    gw_session_t sess;
    int64_t t0, from, to;
    int bucket; /* 0 raw, else seconds */
    bool csv;
    int limit;
    json_t *acc; /* partial answer being built */
    char password[256];
    char hash[EMS_AUTH_HASH_MAX];
    ems_auth_role_t role;
    int verify_rc;
    uv_work_t work;
    char peer[64];
    gw_login_waiter_t lw; /* login: its place in gw_login_t */
} gw_api_ctx_t;

/* Answers with `o` (consumed), numbers in their shortest exact text. */
void gw_api_reply(ems_server_req_t *req, int status, json_t *o, const char *extra);
/* RFC 3339 text of a wall-clock time, or null for ms <= 0. */
json_t *gw_api_time(int64_t ms);
/* A context for `req` (on failure answers 503 and returns NULL). */
gw_api_ctx_t *gw_api_ctx_new(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
/* The same for a handler's own context of `size` bytes that begins with a
 * gw_api_ctx_t (gw_api_ctx_free frees it whole). */
gw_api_ctx_t *gw_api_ctx_alloc(gw_t *gw, ems_server_req_t *req, const gw_route_t *r, size_t size);
void gw_api_ctx_free(gw_api_ctx_t *c);
/* Sends query `q` (consumed) for c's user; `fn` gets the answer and owns c.
 * On refusal answers 429/503 with Retry-After, frees c, returns < 0. */
int gw_api_ask(gw_api_ctx_t *c, json_t *q, gw_link_result_fn fn);
/* Start of every query callback: the parsed answer, or NULL after
 * answering the error (the caller still frees c). */
json_t *gw_api_result(gw_api_ctx_t *c, int status, const char *json, size_t len);
/* ?limit=N in def..max (def when absent); < 0 when malformed. */
int gw_api_query_limit(ems_server_req_t *req, int def, int max, int *out);

/* Handlers (one file per resource). */
void gw_api_login(gw_t *gw, ems_server_req_t *req);
void gw_api_logout(gw_t *gw, ems_server_req_t *req);
void gw_api_devices(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_device(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_history(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_energy(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_sessions(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_command_get(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_commands_list(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_command_post(gw_t *gw, ems_server_req_t *req, const gw_route_t *r,
                         const gw_session_t *s);
void gw_api_alarms_list(gw_t *gw, ems_server_req_t *req, const gw_route_t *r);
void gw_api_alarm_ack(gw_t *gw, ems_server_req_t *req, const gw_route_t *r, const gw_session_t *s);

#endif
