/* device.c: `emsctl device add|rotate|revoke|list` (provisioning).
 *
 * Provisioning state lives in PostgreSQL (tables devices and users,
 * cloud/db/0001_init.sql). emsctl talks to it directly with libpq, blocking
 * (it is a CLI), using the DSN in EMS_PG_DSN or --dsn, and applies the
 * schema migrations first if the database is new. The gateway reads the
 * same rows through the DB writer (device_auth and user queries), so no
 * gateway or DB writer needs to run for provisioning.
 *
 * A device token is 32 random bytes as 64 hex characters; it is printed
 * once on stdout and only its SHA-256 is stored. Revoking (or rotating)
 * takes effect within seconds: a trigger on the devices table
 * (0004_device_auth_notify.sql) notifies the DB writer, which tells the
 * gateways; they drop the cached credential and close a live connection
 * with 4003. If no DB writer listens at that moment, the gateway's periodic
 * re-check (recheck_s, default 60 s) and the DB writer's "re-check
 * everything" when it starts listening again cover it; docs/api.md
 * "Provisioning".
 */
#include "emsctl.h"

#include "auth.h"
#include "error.h"
#include "migrate.h"
#include "telemetry.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Connects with the DSN of --dsn or EMS_PG_DSN and applies migrations.
 * Returns the connection or NULL after printing why. Shared with user.c. */
PGconn *emsctl_prov_connect(const char *dsn)
{
    if (!dsn)
        dsn = getenv("EMS_PG_DSN");
    if (!dsn || !*dsn) {
        fprintf(stderr, "emsctl: no database: set EMS_PG_DSN or pass --dsn DSN\n");
        return NULL;
    }
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "emsctl: cannot connect to the database: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    /* The migrations' "already exists, skipping" notices are noise here. */
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    char dir[1024];
    if (ems_migrate_find_dir(dir, sizeof dir) != 0) {
        fprintf(stderr, "emsctl: cannot find the migrations (cloud/db); set EMS_DB_DIR\n");
        PQfinish(c);
        return NULL;
    }
    ems_migrate_result_t r;
    memset(&r, 0, sizeof r);
    if (ems_migrate_sync(c, dir, EMS_STORAGE_AUTO, &r) != 0) {
        fprintf(stderr, "emsctl: migrations failed: %s\n", r.error);
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs a statement with text parameters; returns the result if it
 * succeeded (caller PQclear's), else prints and returns NULL. */
PGresult *emsctl_prov_exec(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "emsctl: database error: %s", PQerrorMessage(c));
        PQclear(r);
        return NULL;
    }
    return r;
}

static void device_usage(FILE *out)
{
    fprintf(out,
            "usage: emsctl device [--dsn DSN] add ID      create a device, print its token once\n"
            "       emsctl device [--dsn DSN] rotate ID   new token (the old one stops working)\n"
            "       emsctl device [--dsn DSN] revoke ID   refuse the device from now on\n"
            "       emsctl device [--dsn DSN] list        devices and their state\n"
            "The database is EMS_PG_DSN unless --dsn is given. A live connection of a\n"
            "revoked or rotated device is closed by the gateway within seconds (the\n"
            "database notifies the DB writer, which tells the gateway).\n");
}

static int new_token(char tok[65], char hash[65])
{
    if (ems_auth_token_new(tok, 65) != 0 || ems_auth_token_hash(tok, 64, hash, 65) != 0) {
        fprintf(stderr, "emsctl: no randomness available\n");
        return -1;
    }
    return 0;
}

static int dev_add(PGconn *c, const char *id, bool rotate)
{
    char tok[65], hash[65];
    if (new_token(tok, hash) < 0)
        return EMSCTL_FAIL;
    const char *p[2] = {id, hash};
    PGresult *r = emsctl_prov_exec(
        c,
        rotate ? "UPDATE devices SET token_hash = $2, revoked_at = NULL WHERE device_id = $1"
               : "INSERT INTO devices (device_id, token_hash) VALUES ($1, $2) "
                 "ON CONFLICT (device_id) DO NOTHING",
        2, p);
    if (!r)
        return EMSCTL_FAIL;
    bool done = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    if (!done) {
        fprintf(stderr, rotate ? "emsctl: no device '%s' (add it first)\n"
                               : "emsctl: device '%s' exists already (use 'rotate' for a new token)\n",
                id);
        return EMSCTL_FAIL;
    }
    printf("%s\n", tok);
    fflush(stdout);
    fprintf(stderr,
            "emsctl: device '%s' %s. The token above is shown only now; put it in the "
            "device's configuration.\n",
            id, rotate ? "has a new token" : "created");
    return EMSCTL_OK;
}

static int dev_revoke(PGconn *c, const char *id)
{
    const char *p[1] = {id};
    PGresult *r = emsctl_prov_exec(
        c, "UPDATE devices SET revoked_at = coalesce(revoked_at, now()) WHERE device_id = $1", 1,
        p);
    if (!r)
        return EMSCTL_FAIL;
    bool done = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    if (!done) {
        fprintf(stderr, "emsctl: no device '%s'\n", id);
        return EMSCTL_FAIL;
    }
    fprintf(stderr, "emsctl: device '%s' revoked; a live connection is closed within seconds "
                    "(4003)\n",
            id);
    return EMSCTL_OK;
}

static int dev_list(PGconn *c)
{
    PGresult *r = emsctl_prov_exec(
        c,
        "SELECT device_id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
        "coalesce(to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '-') "
        "FROM devices ORDER BY device_id",
        0, NULL);
    if (!r)
        return EMSCTL_FAIL;
    printf("%-32s %-21s %s\n", "DEVICE", "CREATED", "REVOKED");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-32s %-21s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    return EMSCTL_OK;
}

int emsctl_device_main(int argc, char **argv)
{
    const char *dsn = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            device_usage(stdout);
            return EMSCTL_OK;
        } else if (!strcmp(argv[i], "--dsn") && i + 1 < argc) {
            dsn = argv[++i];
        } else if (!strncmp(argv[i], "--dsn=", 6)) {
            dsn = argv[i] + 6;
        } else {
            device_usage(stderr);
            return EMSCTL_USAGE;
        }
    }
    if (i >= argc) {
        device_usage(stderr);
        return EMSCTL_USAGE;
    }
    const char *verb = argv[i++];
    const char *id = i < argc ? argv[i++] : NULL;
    bool wants_id = strcmp(verb, "list") != 0;
    if ((wants_id && !id) || (!wants_id && id) || i < argc ||
        (strcmp(verb, "add") && strcmp(verb, "rotate") && strcmp(verb, "revoke") &&
         strcmp(verb, "list"))) {
        device_usage(stderr);
        return EMSCTL_USAGE;
    }
    if (id && !ems_device_id_valid(id, strlen(id))) {
        fprintf(stderr, "emsctl: '%s' is not a device id (1..64 of [A-Za-z0-9_.-])\n", id);
        return EMSCTL_USAGE;
    }
    PGconn *c = emsctl_prov_connect(dsn);
    if (!c)
        return EMSCTL_FAIL;
    int rc;
    if (!strcmp(verb, "add"))
        rc = dev_add(c, id, false);
    else if (!strcmp(verb, "rotate"))
        rc = dev_add(c, id, true);
    else if (!strcmp(verb, "revoke"))
        rc = dev_revoke(c, id);
    else
        rc = dev_list(c);
    PQfinish(c);
    return rc;
}
