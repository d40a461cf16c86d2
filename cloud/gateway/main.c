/* main.c: ems-gateway, the cloud end of the devices' and dashboards'
 * WebSockets (docs/architecture.md). Reads the configuration, runs one
 * libuv loop until SIGTERM/SIGINT has shut everything down gracefully.
 */
#include "gw.h"

#include "error.h"
#include "log.h"
#include "version.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("ems-gateway %s\n", EMS_VERSION);
        return 0;
    }
    gw_config_t cfg;
    char err[512] = "";
    int rc = gw_config_from_args(&cfg, argc, argv, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc == 0)
        rc = gw_config_check(&cfg, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "ems-gateway: %s\n", err);
        return 2;
    }
    ems_log_level_t level = EMS_LOG_INFO;
    ems_log_level_parse(cfg.log_level, &level);
    ems_log_init("ems-gateway", level);
    ems_log_info("ems-gateway %s starting", EMS_VERSION);
    /* A peer that closes while we write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        ems_log_error("cannot create the event loop");
        return 1;
    }
    static gw_t gw; /* large; lives for the whole process */
    rc = gw_start(&gw, &loop, &cfg);
    if (rc < 0) {
        uv_run(&loop, UV_RUN_DEFAULT); /* lets what was opened close */
        gw_free(&gw);
        uv_loop_close(&loop);
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    gw_free(&gw);
    rc = uv_loop_close(&loop);
    if (rc != 0)
        ems_log_warn("event loop closed with handles open: %s", uv_strerror(rc));
    return 0;
}
