/* gw_session.c: signed session cookies (see gw_session.h). */
#include "gw_session.h"

#include "auth.h"
#include "error.h"

#include <mbedtls/md.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gw_session_key_load(gw_session_key_t *k, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    unsigned char raw[2 * GW_SESSION_KEY_MAX + 8];
    size_t n = fread(raw, 1, sizeof raw, f);
    int big = !feof(f);
    fclose(f);
    if (big)
        return EMS_ECONFIG;
    /* A key written as hex text (openssl rand -hex 32 > key) is decoded;
     * trailing whitespace from an editor is ignored. */
    size_t t = n;
    while (t > 0 && isspace(raw[t - 1]))
        t--;
    size_t hexlen = 0;
    while (hexlen < t && isxdigit(raw[hexlen]))
        hexlen++;
    if (hexlen == t && t % 2 == 0 && t / 2 >= GW_SESSION_KEY_MIN && t / 2 <= GW_SESSION_KEY_MAX) {
        k->key_len = t / 2;
        return ems_auth_unhex((const char *)raw, t, k->key, k->key_len) ? EMS_ECONFIG : 0;
    }
    if (n < GW_SESSION_KEY_MIN || n > GW_SESSION_KEY_MAX)
        return EMS_ECONFIG;
    memcpy(k->key, raw, n);
    k->key_len = n;
    return 0;
}

int gw_session_key_random(gw_session_key_t *k)
{
    k->key_len = 32;
    return ems_auth_random(k->key, k->key_len);
}

static int mac_hex(const gw_session_key_t *k, const char *msg, size_t len, char out[65])
{
    unsigned char mac[32];
    if (mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), k->key, k->key_len,
                        (const unsigned char *)msg, len, mac) != 0)
        return EMS_EIO;
    ems_auth_hex(mac, sizeof mac, out);
    return 0;
}

int gw_session_sign(const gw_session_key_t *k, const gw_session_t *s, char *out, size_t cap)
{
    if (!ems_auth_user_name_valid(s->user, strlen(s->user)) || s->role < EMS_AUTH_ROLE_VIEWER ||
        s->role > EMS_AUTH_ROLE_ADMIN)
        return EMS_EINVAL;
    int n = snprintf(out, cap, "v1|%s|%s|%lld|", s->user, ems_auth_role_name(s->role),
                     (long long)s->expires_s);
    if (n < 0 || (size_t)n + 65 > cap)
        return EMS_ENOSPC;
    char mac[65];
    int rc = mac_hex(k, out, (size_t)n - 1, mac);
    if (rc)
        return rc;
    memcpy(out + n, mac, 65);
    return n + 64;
}

int gw_session_verify(const gw_session_key_t *k, const char *value, size_t len, int64_t now_s,
                      gw_session_t *out)
{
    if (!value || len < 3 + 64 || len >= GW_SESSION_MAX)
        return EMS_EINVAL;
    char buf[GW_SESSION_MAX];
    memcpy(buf, value, len);
    buf[len] = '\0';
    char *last = strrchr(buf, '|');
    if (!last || strlen(last + 1) != 64 || strncmp(buf, "v1|", 3) != 0)
        return EMS_EINVAL;
    char mac[65];
    if (mac_hex(k, buf, (size_t)(last - buf), mac))
        return EMS_EIO;
    if (!ems_auth_equal(last + 1, mac))
        return EMS_EPERM;
    /* Only a correctly signed text is parsed further. */
    *last = '\0';
    char *user = buf + 3, *role = strchr(user, '|');
    if (!role)
        return EMS_EINVAL;
    *role++ = '\0';
    char *exp = strchr(role, '|');
    if (!exp)
        return EMS_EINVAL;
    *exp++ = '\0';
    char *end;
    errno = 0;
    long long e = strtoll(exp, &end, 10);
    gw_session_t s = {0};
    if (errno || *end || end == exp || !ems_auth_user_name_valid(user, strlen(user)) ||
        ems_auth_role_parse(role, &s.role))
        return EMS_EINVAL;
    if (e <= now_s)
        return EMS_EPERM;
    memcpy(s.user, user, strlen(user) + 1);
    s.expires_s = e;
    *out = s;
    return 0;
}

const char *gw_cookie_find(const char *header, size_t hlen, const char *name, size_t *len)
{
    size_t nlen = strlen(name), i = 0;
    while (i < hlen) {
        while (i < hlen && (header[i] == ' ' || header[i] == ';' || header[i] == '\t'))
            i++;
        size_t start = i;
        while (i < hlen && header[i] != ';')
            i++;
        size_t plen = i - start;
        if (plen > nlen && memcmp(header + start, name, nlen) == 0 && header[start + nlen] == '=') {
            const char *v = header + start + nlen + 1;
            size_t vl = plen - nlen - 1;
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                v++;
                vl -= 2;
            }
            *len = vl;
            return v;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ revocation */

typedef struct {
    char mac[65]; /* key of the map */
    int64_t expires_s;
} revoked_t;

/* The MAC part of a cookie value: its last 64 characters after a '|'. */
static bool cookie_mac(const char *value, size_t len, char out[65])
{
    if (!value || len < 65 || value[len - 65] != '|')
        return false;
    memcpy(out, value + len - 64, 64);
    out[64] = '\0';
    return true;
}

void gw_session_revoked_sweep(gw_session_revoked_t *r, int64_t now_s)
{
    for (;;) {
        revoked_t *drop[64];
        size_t n = 0;
        const char *k;
        void *v;
        for (size_t i = 0; n < 64 && gw_map_next(&r->map, &i, &k, &v);)
            if (((revoked_t *)v)->expires_s <= now_s)
                drop[n++] = v;
        for (size_t i = 0; i < n; i++) {
            gw_map_del(&r->map, drop[i]->mac);
            free(drop[i]);
        }
        if (n < 64)
            return;
    }
}

int gw_session_revoke(gw_session_revoked_t *r, const char *value, size_t len, int64_t expires_s,
                      int64_t now_s)
{
    char mac[65];
    if (!cookie_mac(value, len, mac))
        return EMS_EINVAL;
    if (gw_map_get(&r->map, mac))
        return 0;
    int evicted = 0;
    if (r->map.len >= GW_SESSION_REVOKED_MAX)
        gw_session_revoked_sweep(r, now_s);
    if (r->map.len >= GW_SESSION_REVOKED_MAX) {
        /* Full of live entries: give up the one that expires first, the
         * least harmful to forget. */
        revoked_t *first = NULL;
        const char *k;
        void *v;
        for (size_t i = 0; gw_map_next(&r->map, &i, &k, &v);)
            if (!first || ((revoked_t *)v)->expires_s < first->expires_s)
                first = v;
        gw_map_del(&r->map, first->mac);
        free(first);
        evicted = 1;
    }
    revoked_t *e = calloc(1, sizeof *e);
    if (!e)
        return EMS_ENOMEM;
    memcpy(e->mac, mac, sizeof mac);
    e->expires_s = expires_s;
    if (gw_map_put(&r->map, e->mac, e) != 0) {
        free(e);
        return EMS_ENOMEM;
    }
    return evicted;
}

bool gw_session_is_revoked(const gw_session_revoked_t *r, const char *value, size_t len)
{
    char mac[65];
    return r->map.len > 0 && cookie_mac(value, len, mac) && gw_map_get(&r->map, mac) != NULL;
}

void gw_session_revoked_free(gw_session_revoked_t *r)
{
    const char *k;
    void *v;
    for (size_t i = 0; gw_map_next(&r->map, &i, &k, &v);)
        free(v);
    gw_map_free(&r->map);
}
