/* health.h: `ems-dbwriter --health`, the container health check.
 *
 * Health means "can commit", which only the running writer knows: whether
 * its writing connection to PostgreSQL is up, the migrations are applied,
 * and batches commit. A check that the socket file exists says none of
 * that (the socket is created before PostgreSQL is reached, and stays
 * after a wrong password), and a status file written by the writer would
 * go on saying "ok" after the writer hung. So the check asks the writer
 * itself, over the same link the gateway uses: it connects to the socket,
 * says HELLO with "accepts":["status"], and reads the STATUS frame that the
 * writer sends right after its HELLO (docs/protocol.md 5.7). A writer that
 * does not answer within the timeout is unhealthy too.
 *
 * This runs in a short-lived process of its own, so it uses a blocking
 * socket with poll() timeouts; nothing here runs on the writer's loop.
 */
#ifndef EMS_HEALTH_H
#define EMS_HEALTH_H

#include <stdio.h>

/* Asks the writer listening on `socket_path`; prints one line to `out`
 * ("ok: ..." or "unhealthy: ..."). Returns the exit status: 0 when it can
 * commit, 1 when it answers that it cannot (database unreachable, failing
 * commits, migrations pending), 2 when it does not answer at all. */
int ems_health_check(const char *socket_path, unsigned timeout_ms, FILE *out);

#endif
