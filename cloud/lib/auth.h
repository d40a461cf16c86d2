/* auth.h: credentials (user passwords, device tokens, random secrets) and
 * user roles and names, shared by the gateway and emsctl.
 *
 * Passwords are guessable, so they are stored as a slow salted hash:
 * PBKDF2-HMAC-SHA256 with a 16-byte random salt per user, encoded as
 *     pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX
 * (32-byte derived key). The iteration count lives in the string, so it can
 * be raised later without breaking stored hashes.
 *
 * Device tokens are 32 random bytes (64 hex characters); a 256-bit random
 * secret cannot be guessed, so the server stores only its SHA-256 in hex
 * (docs/protocol.md section 1). Every comparison of secrets is constant-time.
 *
 * The functions are pure (no global state); the random ones read the
 * kernel's getrandom(2). ems_auth_password_* are CPU-heavy on purpose: the
 * gateway runs them on libuv's thread pool, never on the loop thread.
 */
#ifndef EMS_AUTH_H
#define EMS_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Default for new hashes: OWASP's 2023 guidance for PBKDF2-HMAC-SHA256.
 * The gateway re-hashes a user's password with this count at the next
 * successful login when the stored hash has fewer (docs/api.md). */
#define EMS_AUTH_PBKDF2_ITER 600000
#define EMS_AUTH_HASH_MAX 160 /* an encoded password hash fits */
#define EMS_AUTH_TOKEN_HEX 64 /* device token / token hash length */

/* Hashes `password` with a fresh salt; writes the encoded form into `out`
 * (NUL-terminated; EMS_AUTH_HASH_MAX suffices). `iterations` 0 means the
 * default. Returns 0, EMS_EINVAL (empty password or iterations out of
 * 1000..10000000), EMS_ENOSPC, or EMS_EIO (no randomness). */
int ems_auth_password_hash(const char *password, unsigned iterations, char *out, size_t cap);

/* Checks `password` against an encoded hash. Returns 0 on a match,
 * EMS_EPERM on a mismatch, EMS_EINVAL if `encoded` is malformed. */
int ems_auth_password_verify(const char *password, const char *encoded);

/* The iteration count of an encoded hash, or EMS_EINVAL if malformed. */
long ems_auth_password_iterations(const char *encoded);

/* Fills `out` with 64 hex characters of a fresh 32-byte random token and a
 * NUL (cap >= 65). Returns 0 or EMS_EIO/EMS_ENOSPC. */
int ems_auth_token_new(char *out, size_t cap);

/* SHA-256 of `len` bytes of `token` as 64 lower-case hex characters and a
 * NUL into `out` (cap >= 65). Returns 0 or EMS_ENOSPC. */
int ems_auth_token_hash(const char *token, size_t len, char *out, size_t cap);

/* True when `a` and `b` (each NUL-terminated) are equal; the time taken
 * depends only on the length of `b` (the secret's known length). */
bool ems_auth_equal(const char *a, const char *b);

/* Fills `buf` with `len` random bytes from the kernel. 0 or EMS_EIO. */
int ems_auth_random(void *buf, size_t len);

/* Lower-case hex of `len` bytes into `out` (cap >= 2*len+1). */
void ems_auth_hex(const unsigned char *in, size_t len, char *out);

/* Parses exactly 2*len hex characters of `hex` into `out`. 0 or EMS_EINVAL. */
int ems_auth_unhex(const char *hex, size_t hexlen, unsigned char *out, size_t len);

/* User names are 1..64 of [A-Za-z0-9_.@-], which never need escaping in a
 * cookie or a log line. */
#define EMS_AUTH_USER_MAX 64

typedef enum {
    EMS_AUTH_ROLE_NONE = 0, /* not logged in */
    EMS_AUTH_ROLE_VIEWER,
    EMS_AUTH_ROLE_OPERATOR,
    EMS_AUTH_ROLE_ADMIN,
} ems_auth_role_t;

const char *ems_auth_role_name(ems_auth_role_t r);
/* Parses "viewer", "operator", "admin". 0 or EMS_EINVAL. */
int ems_auth_role_parse(const char *s, ems_auth_role_t *out);

/* True when `name` is a valid user name (see above). */
bool ems_auth_user_name_valid(const char *name, size_t len);

#endif
