/* gw_session.h: stateless signed session cookies and user roles.
 *
 * A session is the text   v1|USER|ROLE|EXPIRY|MAC   where EXPIRY is Unix
 * seconds and MAC is the hex HMAC-SHA256 of everything before the last '|'
 * under a key every gateway of a deployment shares (session_key_file). Any
 * gateway can check a cookie without a shared store (docs/api.md). The
 * cookie is not encrypted: the user name and role are not secrets.
 *
 * Logout ends the session on the server too: the gateway keeps the MAC of
 * every logged-out cookie until the cookie would have expired
 * (gw_session_revoked_t, bounded), and refuses it meanwhile. That list is
 * per gateway process (not shared, not kept over a restart). A changed role
 * or a deleted user still takes effect when the cookie expires (12 h) or
 * the key is rotated.
 *
 * User names are 1..64 of [A-Za-z0-9_.@-], which never need escaping in a
 * cookie or a log line.
 */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include "auth.h"
#include "gw_map.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_SESSION_MAX 256   /* a cookie value always fits */
#define GW_SESSION_KEY_MIN 32 /* bytes */
#define GW_SESSION_KEY_MAX 128
#define GW_SESSION_TTL_S (12 * 3600)

typedef struct {
    unsigned char key[GW_SESSION_KEY_MAX];
    size_t key_len;
} gw_session_key_t;

/* Loads the key from a file (its raw bytes, or hex text; at least 32
 * bytes). Returns 0, EMS_ECONFIG (too short/too long) or a file error. */
int gw_session_key_load(gw_session_key_t *k, const char *path);
/* A fresh random key (single-gateway setups without a key file). */
int gw_session_key_random(gw_session_key_t *k);

typedef struct {
    char user[EMS_AUTH_USER_MAX + 1];
    ems_auth_role_t role;
    int64_t expires_s;
} gw_session_t;

/* Writes the signed cookie value for `s` into out (NUL-terminated).
 * Returns its length, EMS_EINVAL (bad user/role) or EMS_ENOSPC. */
int gw_session_sign(const gw_session_key_t *k, const gw_session_t *s, char *out, size_t cap);

/* Checks `len` bytes of a cookie value at `now_s`. Returns 0 and fills *out,
 * EMS_EPERM (bad signature or expired) or EMS_EINVAL (malformed). The MAC is
 * compared in constant time. */
int gw_session_verify(const gw_session_key_t *k, const char *value, size_t len, int64_t now_s,
                      gw_session_t *out);

/* Cookies ended by logout, each kept until its own expiry. The key is the
 * cookie's MAC (64 hex), which names one signed session text. At most
 * GW_SESSION_REVOKED_MAX entries: when full, expired entries go first, then
 * the one closest to its expiry (logged by the caller via the return value). */
#define GW_SESSION_REVOKED_MAX 100000

typedef struct {
    gw_map_t map; /* MAC hex -> entry */
} gw_session_revoked_t;

/* Revokes the cookie value `value` (already verified) that expires at
 * `expires_s`. Returns 0, 1 if an unexpired entry had to be evicted to make
 * room, EMS_EINVAL (no MAC in it) or EMS_ENOMEM. */
int gw_session_revoke(gw_session_revoked_t *r, const char *value, size_t len, int64_t expires_s,
                      int64_t now_s);
/* True if the cookie value was revoked (and has not expired). */
bool gw_session_is_revoked(const gw_session_revoked_t *r, const char *value, size_t len);
/* Drops entries whose cookie has expired by now_s. */
void gw_session_revoked_sweep(gw_session_revoked_t *r, int64_t now_s);
void gw_session_revoked_free(gw_session_revoked_t *r);

/* Finds cookie `name` in a Cookie header value ("a=1; ems_session=..").
 * Returns a pointer into `header` and sets *len, or NULL. */
const char *gw_cookie_find(const char *header, size_t hlen, const char *name, size_t *len);

#endif
