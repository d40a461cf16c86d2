/* error.h: the one error convention of the project.
 *
 * Functions return 0 (or a non-negative count) on success and a negative
 * EMS_E* code on failure. Library codes (mbedTLS, libpq, libuv, SQLite) are
 * mapped to these at the boundary, and the original text is logged there.
 * EMS_E* values are negative errno values where one fits, so a libuv code
 * (also negative errno) passes through unchanged.
 */
#ifndef EMS_ERROR_H
#define EMS_ERROR_H

#include <errno.h>

#define EMS_OK 0
#define EMS_ENOMEM (-ENOMEM)       /* allocation failed */
#define EMS_EINVAL (-EINVAL)       /* invalid argument or message */
#define EMS_ENOSPC (-ENOSPC)       /* buffer or queue full */
#define EMS_EAGAIN (-EAGAIN)       /* try again later (would block) */
#define EMS_EIO (-EIO)             /* I/O error */
#define EMS_ENOENT (-ENOENT)       /* no such item */
#define EMS_EEXIST (-EEXIST)       /* already exists */
#define EMS_EPERM (-EPERM)         /* not allowed */
#define EMS_EPROTO (-EPROTO)       /* protocol violation by the peer */
#define EMS_EMSGSIZE (-EMSGSIZE)   /* message too large */
#define EMS_ETIMEDOUT (-ETIMEDOUT) /* deadline passed */
#define EMS_ECLOSED (-EPIPE)       /* connection is closing or closed */
#define EMS_ENXIO (-ENXIO)         /* no answer: an I2C address that does not acknowledge */
#define EMS_ENODEV (-ENODEV)       /* not the expected device (wrong chip ID) */
#define EMS_ERANGE (-ERANGE)       /* a reading outside what the device can measure */
#define EMS_ESTALE (-ESTALE)       /* a reading that did not change when it must have */
#define EMS_ETLS (-10001)          /* TLS failure (details logged) */
#define EMS_EDB (-10002)           /* database failure (details logged) */
#define EMS_ECONFIG (-10003)       /* bad configuration */

/* ems_strerror returns a static, human-readable text for an EMS_E* code (or
 * any negative errno). Never NULL; the caller does not free it. */
const char *ems_strerror(int code);

#endif
