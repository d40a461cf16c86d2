/* main.c: ems-dbwriter, which stores the gateway's telemetry and events in
 * PostgreSQL (TimescaleDB when available) and answers its history queries
 * (docs/storage.md). Reads the configuration, answers --version, --help
 * and --health, and otherwise runs the writer (dbw.h) on one libuv loop
 * until SIGTERM/SIGINT has drained and closed everything. Exits 0 after a
 * clean shutdown, 1 when the writer failed, 2 for a bad configuration.
 */
#include "dbw.h"
#include "health.h"
#include "log.h"
#include "version.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("ems-dbwriter %s\n", EMS_VERSION);
        return 0;
    }
    ems_dbw_config_t cfg;
    ems_log_level_t level = EMS_LOG_INFO;
    int rc = ems_dbw_config_from_args(&cfg, argc, argv, &level);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (cfg.health)
        return ems_health_check(cfg.socket_path, 3000, stdout);
    ems_log_init("ems-dbwriter", level);
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    uv_loop_init(&loop);
    ems_dbw_t *d = NULL;
    if (ems_dbw_new(&loop, &cfg, &d) < 0)
        return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    int status = ems_dbw_exit_status(d);
    ems_dbw_free(d);
    if (uv_loop_close(&loop) != 0)
        ems_log_warn("shutdown: handles still open at exit");
    ems_log_info("stopped");
    return status;
}
