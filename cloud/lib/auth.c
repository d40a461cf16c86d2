/* auth.c: credentials and user roles (see auth.h). */
#include "auth.h"

#include "error.h"

#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define SALT_LEN 16
#define DK_LEN 32
#define PREFIX "pbkdf2-sha256$"

int ems_auth_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return EMS_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void ems_auth_hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int ems_auth_unhex(const char *hex, size_t hexlen, unsigned char *out, size_t len)
{
    if (hexlen != 2 * len)
        return EMS_EINVAL;
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return EMS_EINVAL;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

bool ems_auth_equal(const char *a, const char *b)
{
    size_t lb = strlen(b), la = strlen(a);
    /* Walk b's length whatever a is, reading a only within its bounds, so the
     * timing tells an attacker nothing about how much of a secret matched. */
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        diff |= (unsigned char)(ca ^ (unsigned char)b[i]);
    }
    return diff == 0;
}

static int pbkdf2(const char *password, const unsigned char *salt, unsigned iter,
                  unsigned char dk[DK_LEN])
{
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc = mbedtls_md_setup(&ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    if (rc == 0)
        rc = mbedtls_pkcs5_pbkdf2_hmac(&ctx, (const unsigned char *)password, strlen(password),
                                       salt, SALT_LEN, iter, DK_LEN, dk);
    mbedtls_md_free(&ctx);
    return rc ? EMS_EIO : 0;
}

int ems_auth_password_hash(const char *password, unsigned iterations, char *out, size_t cap)
{
    if (iterations == 0)
        iterations = EMS_AUTH_PBKDF2_ITER;
    if (!password || !password[0] || iterations < 1000 || iterations > 10000000)
        return EMS_EINVAL;
    unsigned char salt[SALT_LEN], dk[DK_LEN];
    int rc = ems_auth_random(salt, sizeof salt);
    if (rc)
        return rc;
    rc = pbkdf2(password, salt, iterations, dk);
    if (rc)
        return rc;
    char salt_hex[2 * SALT_LEN + 1], dk_hex[2 * DK_LEN + 1];
    ems_auth_hex(salt, SALT_LEN, salt_hex);
    ems_auth_hex(dk, DK_LEN, dk_hex);
    mbedtls_platform_zeroize(dk, sizeof dk);
    int n = snprintf(out, cap, PREFIX "%u$%s$%s", iterations, salt_hex, dk_hex);
    return n < 0 || (size_t)n >= cap ? EMS_ENOSPC : 0;
}

long ems_auth_password_iterations(const char *encoded)
{
    if (!encoded || strncmp(encoded, PREFIX, strlen(PREFIX)) != 0)
        return EMS_EINVAL;
    const char *p = encoded + strlen(PREFIX);
    char *end;
    errno = 0;
    unsigned long iter = strtoul(p, &end, 10);
    if (errno || end == p || *end != '$' || iter < 1000 || iter > 10000000)
        return EMS_EINVAL;
    return (long)iter;
}

int ems_auth_password_verify(const char *password, const char *encoded)
{
    if (!password || !encoded || strncmp(encoded, PREFIX, strlen(PREFIX)) != 0)
        return EMS_EINVAL;
    const char *p = encoded + strlen(PREFIX);
    char *end;
    errno = 0;
    unsigned long iter = strtoul(p, &end, 10);
    if (errno || end == p || *end != '$' || iter < 1000 || iter > 10000000)
        return EMS_EINVAL;
    const char *salt_hex = end + 1, *d = strchr(salt_hex, '$');
    if (!d)
        return EMS_EINVAL;
    const char *dk_hex = d + 1;
    unsigned char salt[SALT_LEN], want[DK_LEN], got[DK_LEN];
    if (ems_auth_unhex(salt_hex, (size_t)(d - salt_hex), salt, SALT_LEN) ||
        ems_auth_unhex(dk_hex, strlen(dk_hex), want, DK_LEN))
        return EMS_EINVAL;
    int rc = pbkdf2(password, salt, (unsigned)iter, got);
    if (rc)
        return rc;
    unsigned char diff = 0;
    for (size_t i = 0; i < DK_LEN; i++)
        diff |= (unsigned char)(got[i] ^ want[i]);
    mbedtls_platform_zeroize(got, sizeof got);
    return diff ? EMS_EPERM : 0;
}

int ems_auth_token_new(char *out, size_t cap)
{
    if (cap < EMS_AUTH_TOKEN_HEX + 1)
        return EMS_ENOSPC;
    unsigned char raw[32];
    int rc = ems_auth_random(raw, sizeof raw);
    if (rc)
        return rc;
    ems_auth_hex(raw, sizeof raw, out);
    mbedtls_platform_zeroize(raw, sizeof raw);
    return 0;
}

int ems_auth_token_hash(const char *token, size_t len, char *out, size_t cap)
{
    if (cap < EMS_AUTH_TOKEN_HEX + 1)
        return EMS_ENOSPC;
    unsigned char h[32];
    if (mbedtls_sha256_ret((const unsigned char *)token, len, h, 0) != 0)
        return EMS_EIO;
    ems_auth_hex(h, sizeof h, out);
    return 0;
}

static const char *const role_names[] = {"none", "viewer", "operator", "admin"};

const char *ems_auth_role_name(ems_auth_role_t r)
{
    return (unsigned)r < 4 ? role_names[r] : "none";
}

int ems_auth_role_parse(const char *s, ems_auth_role_t *out)
{
    for (int r = EMS_AUTH_ROLE_VIEWER; r <= EMS_AUTH_ROLE_ADMIN; r++) {
        if (s && strcmp(s, role_names[r]) == 0) {
            *out = (ems_auth_role_t)r;
            return 0;
        }
    }
    return EMS_EINVAL;
}

bool ems_auth_user_name_valid(const char *name, size_t len)
{
    if (!name || len == 0 || len > EMS_AUTH_USER_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '@' || c == '-'))
            return false;
    }
    return true;
}
