/* Unit tests: passwords, device tokens and session cookies (cloud/lib/auth, gw_session). */
#include "ems_test.h"

#include "auth.h"
#include "error.h"
#include "gw_session.h"

#include <stdio.h>
#include <string.h>

static void test_password_roundtrip(void)
{
    char h[EMS_AUTH_HASH_MAX];
    EMS_CHECK_INT(ems_auth_password_hash("correct horse", 1000, h, sizeof h), ==, 0);
    EMS_CHECK(strncmp(h, "pbkdf2-sha256$1000$", 19) == 0);
    EMS_CHECK_INT(ems_auth_password_verify("correct horse", h), ==, 0);
    EMS_CHECK_INT(ems_auth_password_verify("correct horsf", h), ==, EMS_EPERM);
    EMS_CHECK_INT(ems_auth_password_verify("", h), ==, EMS_EPERM);
}

static void test_password_salted(void)
{
    char a[EMS_AUTH_HASH_MAX], b[EMS_AUTH_HASH_MAX];
    EMS_CHECK_INT(ems_auth_password_hash("pw", 1000, a, sizeof a), ==, 0);
    EMS_CHECK_INT(ems_auth_password_hash("pw", 1000, b, sizeof b), ==, 0);
    EMS_CHECK(strcmp(a, b) != 0); /* a fresh salt each time */
    EMS_CHECK_INT(ems_auth_password_verify("pw", a), ==, 0);
    EMS_CHECK_INT(ems_auth_password_verify("pw", b), ==, 0);
}

/* Cross-check with an independent implementation: Python's
 * hashlib.pbkdf2_hmac('sha256', b'password', b'saltSALTsaltSALT', 4096, 32). */
static void test_password_known_vector(void)
{
    const char *enc = "pbkdf2-sha256$4096$73616c7453414c5473616c7453414c54$"
                      "9150fa34ce258f3fa0f49507e456a9a71924f682d42f36482b2618848fd38e5a";
    EMS_CHECK_INT(ems_auth_password_verify("password", enc), ==, 0);
    EMS_CHECK_INT(ems_auth_password_verify("Password", enc), ==, EMS_EPERM);
}

static void test_password_malformed(void)
{
    EMS_CHECK_INT(ems_auth_password_verify("x", "md5$1$2$3"), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_auth_password_verify("x", "pbkdf2-sha256$10$aa$bb"), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_auth_password_verify("x", "pbkdf2-sha256$1000$zz$bb"), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_auth_password_verify("x", "pbkdf2-sha256$1000"), ==, EMS_EINVAL);
    char h[EMS_AUTH_HASH_MAX];
    EMS_CHECK_INT(ems_auth_password_hash("", 1000, h, sizeof h), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_auth_password_hash("x", 10, h, sizeof h), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_auth_password_hash("x", 1000, h, 20), ==, EMS_ENOSPC);
}

/* New hashes use the current count (600,000, OWASP's guidance for
 * PBKDF2-HMAC-SHA256); the count of a stored hash can be read back, which
 * is how the gateway knows to rehash at login. */
static void test_password_iterations(void)
{
    EMS_CHECK_INT(EMS_AUTH_PBKDF2_ITER, >=, 600000);
    char h[EMS_AUTH_HASH_MAX];
    EMS_CHECK_INT(ems_auth_password_hash("pw-12345678", 1000, h, sizeof h), ==, 0);
    EMS_CHECK_INT(ems_auth_password_iterations(h), ==, 1000);
    EMS_CHECK_INT(ems_auth_password_iterations("pbkdf2-sha256$600000$00$00"), ==, 600000);
    EMS_CHECK_INT(ems_auth_password_iterations("pbkdf2-sha256$12$00$00"), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_auth_password_iterations("md5$x"), ==, EMS_EINVAL);
}

static void test_token(void)
{
    char t[65], t2[65], h[65];
    EMS_CHECK_INT(ems_auth_token_new(t, sizeof t), ==, 0);
    EMS_CHECK_INT(strlen(t), ==, 64);
    EMS_CHECK_INT(ems_auth_token_new(t2, sizeof t2), ==, 0);
    EMS_CHECK(strcmp(t, t2) != 0);
    /* SHA-256("abc"), FIPS 180-2. */
    EMS_CHECK_INT(ems_auth_token_hash("abc", 3, h, sizeof h), ==, 0);
    EMS_CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EMS_CHECK_INT(ems_auth_token_hash("abc", 3, h, 64), ==, EMS_ENOSPC);
}

static void test_equal(void)
{
    EMS_CHECK(ems_auth_equal("abc", "abc"));
    EMS_CHECK(!ems_auth_equal("abd", "abc"));
    EMS_CHECK(!ems_auth_equal("ab", "abc"));
    EMS_CHECK(!ems_auth_equal("abcd", "abc"));
    EMS_CHECK(ems_auth_equal("", ""));
}

static gw_session_key_t key(void)
{
    gw_session_key_t k;
    memset(&k, 0, sizeof k);
    k.key_len = 32;
    memset(k.key, 7, 32);
    return k;
}

static void test_session_roundtrip(void)
{
    gw_session_key_t k = key();
    gw_session_t s = {.role = EMS_AUTH_ROLE_OPERATOR, .expires_s = 2000};
    strcpy(s.user, "ada");
    char v[GW_SESSION_MAX];
    int n = gw_session_sign(&k, &s, v, sizeof v);
    EMS_CHECK(n > 0);
    EMS_CHECK(strncmp(v, "v1|ada|operator|2000|", 21) == 0);
    gw_session_t out;
    EMS_CHECK_INT(gw_session_verify(&k, v, (size_t)n, 1000, &out), ==, 0);
    EMS_CHECK_STR(out.user, "ada");
    EMS_CHECK_INT(out.role, ==, EMS_AUTH_ROLE_OPERATOR);
    EMS_CHECK_INT(out.expires_s, ==, 2000);
    /* Expired. */
    EMS_CHECK_INT(gw_session_verify(&k, v, (size_t)n, 2000, &out), ==, EMS_EPERM);
}

static void test_session_tamper(void)
{
    gw_session_key_t k = key();
    gw_session_t s = {.role = EMS_AUTH_ROLE_VIEWER, .expires_s = 5000};
    strcpy(s.user, "bob");
    char v[GW_SESSION_MAX];
    int n = gw_session_sign(&k, &s, v, sizeof v);
    EMS_CHECK(n > 0);
    /* Promote oneself to admin: the MAC no longer matches. */
    char forged[GW_SESSION_MAX];
    snprintf(forged, sizeof forged, "v1|bob|admin|5000|%s", strrchr(v, '|') + 1);
    gw_session_t out;
    EMS_CHECK_INT(gw_session_verify(&k, forged, strlen(forged), 1, &out), ==, EMS_EPERM);
    /* Another key. */
    gw_session_key_t k2 = key();
    k2.key[0] = 8;
    EMS_CHECK_INT(gw_session_verify(&k2, v, (size_t)n, 1, &out), ==, EMS_EPERM);
    /* One flipped MAC character. */
    v[n - 1] = v[n - 1] == 'a' ? 'b' : 'a';
    EMS_CHECK_INT(gw_session_verify(&k, v, (size_t)n, 1, &out), ==, EMS_EPERM);
    /* Garbage. */
    EMS_CHECK_INT(gw_session_verify(&k, "v1|x", 4, 1, &out), ==, EMS_EINVAL);
    EMS_CHECK_INT(gw_session_verify(&k, "", 0, 1, &out), ==, EMS_EINVAL);
}

static void test_session_bad_user(void)
{
    gw_session_key_t k = key();
    gw_session_t s = {.role = EMS_AUTH_ROLE_VIEWER, .expires_s = 5000};
    strcpy(s.user, "a|b");
    char v[GW_SESSION_MAX];
    EMS_CHECK_INT(gw_session_sign(&k, &s, v, sizeof v), ==, EMS_EINVAL);
    EMS_CHECK(ems_auth_user_name_valid("ada.l@x-y_z", 11));
    EMS_CHECK(!ems_auth_user_name_valid("a b", 3));
    EMS_CHECK(!ems_auth_user_name_valid("", 0));
}

static void test_cookie_find(void)
{
    const char *h = "a=1; ems_session=v1|x|y; b=\"q\"";
    size_t len = 0;
    const char *v = gw_cookie_find(h, strlen(h), "ems_session", &len);
    EMS_CHECK(v != NULL);
    EMS_CHECK_INT(len, ==, 6);
    EMS_CHECK(strncmp(v, "v1|x|y", 6) == 0);
    v = gw_cookie_find(h, strlen(h), "b", &len);
    EMS_CHECK(v && len == 1 && v[0] == 'q');
    EMS_CHECK(gw_cookie_find(h, strlen(h), "ems", &len) == NULL);
    EMS_CHECK(gw_cookie_find("", 0, "a", &len) == NULL);
}

static void test_roles(void)
{
    ems_auth_role_t r;
    EMS_CHECK_INT(ems_auth_role_parse("admin", &r), ==, 0);
    EMS_CHECK_INT(r, ==, EMS_AUTH_ROLE_ADMIN);
    EMS_CHECK_INT(ems_auth_role_parse("root", &r), ==, EMS_EINVAL);
    EMS_CHECK_STR(ems_auth_role_name(EMS_AUTH_ROLE_VIEWER), "viewer");
    EMS_CHECK(EMS_AUTH_ROLE_ADMIN > EMS_AUTH_ROLE_OPERATOR &&
              EMS_AUTH_ROLE_OPERATOR > EMS_AUTH_ROLE_VIEWER);
}

static void test_key_file(void)
{
    char path[] = "/tmp/gwkeyXXXXXX";
    int fd = mkstemp(path);
    EMS_CHECK(fd >= 0);
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    EMS_CHECK(write(fd, hex, strlen(hex)) == (ssize_t)strlen(hex));
    close(fd);
    gw_session_key_t k;
    EMS_CHECK_INT(gw_session_key_load(&k, path), ==, 0);
    EMS_CHECK_INT(k.key_len, ==, 32);
    EMS_CHECK_INT(k.key[1], ==, 0x11);
    /* Too short. */
    FILE *f = fopen(path, "w");
    fputs("short", f);
    fclose(f);
    EMS_CHECK_INT(gw_session_key_load(&k, path), ==, EMS_ECONFIG);
    unlink(path);
    EMS_CHECK(gw_session_key_load(&k, "/nonexistent/key") < 0);
}

int main(void)
{
    EMS_RUN(test_password_roundtrip);
    EMS_RUN(test_password_salted);
    EMS_RUN(test_password_known_vector);
    EMS_RUN(test_password_malformed);
    EMS_RUN(test_password_iterations);
    EMS_RUN(test_token);
    EMS_RUN(test_equal);
    EMS_RUN(test_session_roundtrip);
    EMS_RUN(test_session_tamper);
    EMS_RUN(test_session_bad_user);
    EMS_RUN(test_cookie_find);
    EMS_RUN(test_roles);
    EMS_RUN(test_key_file);
    EMS_TEST_END();
}
