/* dbw_config.c: ems-dbwriter's settings from the environment and flags
 * (dbw.h). */
#include "dbw.h"

#include "error.h"
#include "link.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: ems-dbwriter [options]      (ems-dbwriter --version: the release)\n"
        "  --socket PATH            Unix socket for the gateway (EMS_DBWRITER_SOCKET,\n"
        "                           default /run/ems/dbwriter.sock)\n"
        "  --dsn DSN                PostgreSQL connection string (EMS_PG_DSN; else the\n"
        "                           libpq variables PGHOST, PGPORT, PGUSER, PGDATABASE...)\n"
        "  --storage MODE           auto | postgres | timescaledb (default auto)\n"
        "  --migrations DIR         SQL migrations (EMS_DB_DIR; default cloud/db of the tree)\n"
        "  --migrate-only           apply the migrations and exit\n"
        "  --health                 ask the running writer on --socket whether it can commit;\n"
        "                           prints its state, exits 0 if so, 1 if not, 2 if it does\n"
        "                           not answer (the container health check)\n"
        "  --batch-rows N           rows per batch (default 2000)\n"
        "  --batch-ms N             longest wait before a batch is written (default 100)\n"
        "  --queue-rows N           uncommitted rows held before backpressure (default 50000)\n"
        "  --retention-days N       plain PostgreSQL: raw rows kept (default 30)\n"
        "  --rollup-retention-days N  plain PostgreSQL: 1-minute rollup kept (default 730)\n"
        "  --rollup-interval-ms N   plain PostgreSQL: rollup step period (default 10000)\n"
        "  --rollup-max-buckets N   plain PostgreSQL: late buckets recomputed per step; a\n"
        "                           backlog runs steps back to back (default 1000)\n"
        "  --tsdb-jobs-check-ms N   TimescaleDB: how often the background jobs' state is\n"
        "                           read (default 60000)\n"
        "  --shutdown-timeout MS    longest final drain on SIGTERM (default 10000)\n"
        "  --log-level LEVEL        error | warn | info | debug (EMS_LOG_LEVEL, default info)\n");
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v < min || v > max)
        return EMS_EINVAL;
    *out = (unsigned)v;
    return 0;
}

int ems_dbw_config_from_args(ems_dbw_config_t *c, int argc, char **argv, ems_log_level_t *level)
{
    const char *env;
    memset(c, 0, sizeof *c);
    c->socket_path = (env = getenv("EMS_DBWRITER_SOCKET")) && *env ? env : "/run/ems/dbwriter.sock";
    c->dsn = getenv("EMS_PG_DSN");
    c->batch_rows = 2000;
    c->batch_ms = 100;
    c->queue_rows = 50000;
    c->retention_days = 30;
    c->rollup_retention_days = 730;
    c->rollup_interval_ms = 10000;
    c->rollup_max_buckets = 1000;
    c->tsdb_jobs_check_ms = 60000;
    c->shutdown_timeout_ms = 10000;
    if ((env = getenv("EMS_LOG_LEVEL")) && *env && ems_log_level_parse(env, level) < 0) {
        fprintf(stderr, "ems-dbwriter: bad EMS_LOG_LEVEL %s\n", env);
        return EMS_ECONFIG;
    }
    enum {
        O_SOCKET = 256,
        O_DSN,
        O_STORAGE,
        O_MIGRATIONS,
        O_MIGRATE_ONLY,
        O_BATCH_ROWS,
        O_BATCH_MS,
        O_QUEUE_ROWS,
        O_RETENTION,
        O_ROLLUP_RETENTION,
        O_ROLLUP_INTERVAL,
        O_SHUTDOWN,
        O_LOG,
        O_HELP,
        O_HEALTH,
        O_ROLLUP_MAX,
        O_TSDB_JOBS
    };
    static const struct option opts[] = {
        {"socket", required_argument, 0, O_SOCKET},
        {"dsn", required_argument, 0, O_DSN},
        {"storage", required_argument, 0, O_STORAGE},
        {"migrations", required_argument, 0, O_MIGRATIONS},
        {"migrate-only", no_argument, 0, O_MIGRATE_ONLY},
        {"batch-rows", required_argument, 0, O_BATCH_ROWS},
        {"batch-ms", required_argument, 0, O_BATCH_MS},
        {"queue-rows", required_argument, 0, O_QUEUE_ROWS},
        {"retention-days", required_argument, 0, O_RETENTION},
        {"rollup-retention-days", required_argument, 0, O_ROLLUP_RETENTION},
        {"rollup-interval-ms", required_argument, 0, O_ROLLUP_INTERVAL},
        {"shutdown-timeout", required_argument, 0, O_SHUTDOWN},
        {"log-level", required_argument, 0, O_LOG},
        {"help", no_argument, 0, O_HELP},
        {"health", no_argument, 0, O_HEALTH},
        {"rollup-max-buckets", required_argument, 0, O_ROLLUP_MAX},
        {"tsdb-jobs-check-ms", required_argument, 0, O_TSDB_JOBS},
        {0, 0, 0, 0},
    };
    int o;
    int rc = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_SOCKET:
            c->socket_path = optarg;
            break;
        case O_DSN:
            c->dsn = optarg;
            break;
        case O_STORAGE:
            rc = ems_storage_parse(optarg, &c->storage);
            break;
        case O_MIGRATIONS:
            c->migrations = optarg;
            break;
        case O_MIGRATE_ONLY:
            c->migrate_only = true;
            break;
        case O_BATCH_ROWS:
            rc = parse_uint(optarg, 1, EMS_LINK_RECORDS_MAX * 16, &c->batch_rows);
            break;
        case O_BATCH_MS:
            rc = parse_uint(optarg, 1, 60000, &c->batch_ms);
            break;
        case O_QUEUE_ROWS:
            rc = parse_uint(optarg, 100, 10000000, &c->queue_rows);
            break;
        case O_RETENTION:
            rc = parse_uint(optarg, 1, 100000, &c->retention_days);
            break;
        case O_ROLLUP_RETENTION:
            rc = parse_uint(optarg, 1, 100000, &c->rollup_retention_days);
            break;
        case O_ROLLUP_INTERVAL:
            rc = parse_uint(optarg, 100, 3600000, &c->rollup_interval_ms);
            break;
        case O_SHUTDOWN:
            rc = parse_uint(optarg, 0, 3600000, &c->shutdown_timeout_ms);
            break;
        case O_LOG:
            rc = ems_log_level_parse(optarg, level);
            break;
        case O_HELP:
            usage(stdout);
            return 1;
        case O_HEALTH:
            c->health = true;
            break;
        case O_ROLLUP_MAX:
            rc = parse_uint(optarg, 1, 10000000, &c->rollup_max_buckets);
            break;
        case O_TSDB_JOBS:
            rc = parse_uint(optarg, 100, 86400000, &c->tsdb_jobs_check_ms);
            break;
        default:
            usage(stderr);
            return EMS_ECONFIG;
        }
        if (rc < 0) {
            fprintf(stderr, "ems-dbwriter: bad value for --%s: %s\n", opts[o - O_SOCKET].name,
                    optarg);
            return EMS_ECONFIG;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return EMS_ECONFIG;
    }
    if (c->queue_rows < c->batch_rows * 2) {
        fprintf(stderr, "ems-dbwriter: --queue-rows must be at least twice --batch-rows\n");
        return EMS_ECONFIG;
    }
    return 0;
}
