/* main.c: ems-edge, the edge daemon (docs/edge-daemon.md).
 *
 * Parses the configuration (edge/config.h: file, then flags), answers
 * --help, --version and --check, and otherwise runs the daemon
 * (edge/daemon.h) on one libuv loop until SIGTERM or SIGINT. Exits 0 after
 * a clean shutdown, 1 when the daemon could not start or the loop did not
 * close cleanly, 2 for a bad configuration.
 */
#include "config.h"
#include "daemon.h"
#include "error.h"
#include "hwio.h"
#include "log.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

int main(int argc, char *argv[])
{
    static ems_edge_config_t cfg; /* large; static keeps it off the stack */
    char err[1024];
    ems_log_init("ems-edge", EMS_LOG_INFO);
    if (ems_edge_config_from_args(&cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "ems-edge: %s\n", err);
        return 2;
    }
    if (cfg.show_help) {
        fputs(ems_edge_config_usage(), stdout);
        return 0;
    }
    if (cfg.show_version) {
        printf("%s\n", EMS_EDGE_FIRMWARE);
        return 0;
    }
    if (cfg.probe_only)
        return ems_hwio_probe(&cfg.hw, stdout);
    if (cfg.check_only) {
        /* Also what the daemon reads at start: the token must be usable. */
        char tok[80];
        if (ems_edge_config_read_token(cfg.token_file, tok, sizeof tok, err, sizeof err) < 0) {
            fprintf(stderr, "ems-edge: %s\n", err);
            return 2;
        }
        memset(tok, 0, sizeof tok);
        printf("ems-edge: configuration OK\n");
        return 0;
    }
    ems_log_set_level(cfg.log_level);
    /* Writes to a peer that vanished must fail with EPIPE, not kill us
     * (common/net/conn.h). */
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc < 0) {
        ems_log_error("uv_loop_init: %s", uv_strerror(rc));
        return 1;
    }
    ems_edge_daemon_t *d = NULL;
    rc = ems_edge_daemon_new(&loop, &cfg, argc, argv, &d);
    if (rc < 0) {
        ems_log_error("cannot start: %s", ems_strerror(rc));
        uv_loop_close(&loop);
        return 1;
    }
    ems_edge_daemon_start(d); /* on failure it has begun its shutdown */
    uv_run(&loop, UV_RUN_DEFAULT);
    int status = ems_edge_daemon_exit_status(d);
    ems_edge_daemon_free(d);
    rc = uv_loop_close(&loop);
    if (rc != 0) {
        ems_log_error("the loop did not close cleanly: %s", uv_strerror(rc));
        uv_walk(&loop, NULL, NULL);
        return 1;
    }
    ems_log_info("stopped");
    return status;
}
