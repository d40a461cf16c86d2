/* Unit tests: the DB writer's PostgreSQL connection (cloud/dbwriter/pg.c)
 * against a fake server on a real Unix socket that speaks just enough of
 * the wire protocol (AuthenticationOk, ReadyForQuery) for libpq to connect.
 *
 * The case here is the one a PostgreSQL killed with -m immediate produced,
 * rarely, in the fault suite: the backend writes its FATAL message and
 * exits while our pipelined batch is still unread in its socket. The kernel
 * then sets ECONNRESET on our end (EPOLLERR with data still queued), libuv
 * stops the poll handle and reports the error once, libpq reads the FATAL
 * message fine, and a driver that believes its poll is still armed waits
 * forever with the batch in flight. */
#include "ems_test.h"

#include "error.h"
#include "log.h"
#include "pg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

typedef struct {
    char dir[64];
    int listen_fd;
    _Atomic int server_fd; /* the accepted connection once its handshake is done */
    pthread_t thread;
    uv_timer_t tick, deadline;
    ems_pg_t *pg;
    ems_pg_req_t req;
    int ups, downs, done_status, dones;
    bool submitted, killed, closing, done_by_close;
} fx_t;

static int read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Accepts one client, reads its startup packet and lets it in. */
static void *server_main(void *arg)
{
    fx_t *fx = arg;
    int fd = accept(fx->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    uint32_t len;
    uint8_t body[1024];
    if (read_full(fd, &len, 4) < 0 || ntohl(len) < 8 || ntohl(len) - 4 > sizeof body ||
        read_full(fd, body, ntohl(len) - 4) < 0) {
        close(fd);
        return NULL;
    }
    static const uint8_t hello[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0, /* AuthenticationOk */
                                    'Z', 0, 0, 0, 5, 'I'};       /* ReadyForQuery */
    if (write(fd, hello, sizeof hello) != (ssize_t)sizeof hello) {
        close(fd);
        return NULL;
    }
    atomic_store(&fx->server_fd, fd);
    return NULL;
}

static int send_select(ems_pg_req_t *r, PGconn *conn)
{
    if (PQsendQueryParams(conn, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
        PQpipelineSync(conn) != 1)
        return EMS_EIO;
    r->syncs = 1;
    return 0;
}

static void req_done(ems_pg_req_t *r, int status)
{
    fx_t *fx = r->data;
    fx->done_status = status;
    fx->done_by_close = fx->closing;
    fx->dones++;
}

static void on_up(ems_pg_t *pg, void *ud)
{
    fx_t *fx = ud;
    fx->ups++;
    if (fx->submitted)
        return;
    fx->req.pipeline = true;
    fx->req.send = send_select;
    fx->req.on_done = req_done;
    fx->req.data = fx;
    EMS_CHECK_INT(ems_pg_submit(pg, &fx->req), ==, 0);
    fx->submitted = true;
}

static void on_down(ems_pg_t *pg, void *ud, const char *why)
{
    (void)pg;
    (void)why;
    ((fx_t *)ud)->downs++;
}

static void stop_all(fx_t *fx)
{
    uv_timer_stop(&fx->tick);
    uv_timer_stop(&fx->deadline);
    fx->closing = true;
    if (fx->pg) {
        ems_pg_close(fx->pg, NULL, NULL);
        fx->pg = NULL;
    }
}

/* On the loop thread: once the pipelined query sits unread in the server's
 * socket, the "backend" writes FATAL and exits. Both happen before the loop
 * polls again, so the client sees data, EOF and ECONNRESET at once. */
static void tick_cb(uv_timer_t *t)
{
    fx_t *fx = t->data;
    int fd = atomic_load(&fx->server_fd);
    if (!fx->killed && fd >= 0 && fx->submitted) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 1) {
            static const char msg[] = "SFATAL\0VFATAL\0C57P01\0Mterminating connection due to "
                                      "immediate shutdown command\0";
            uint8_t e[128];
            uint32_t n = htonl((uint32_t)(4 + sizeof msg)); /* sizeof counts the final \0 */
            e[0] = 'E';
            memcpy(e + 1, &n, 4);
            memcpy(e + 5, msg, sizeof msg);
            EMS_CHECK(write(fd, e, 5 + sizeof msg) == (ssize_t)(5 + sizeof msg));
            close(fd);
            fx->killed = true;
        }
    }
    if (fx->killed && fx->dones == 1 && fx->downs >= 1)
        stop_all(fx);
}

static void deadline_cb(uv_timer_t *t)
{
    stop_all(t->data);
}

static void test_reset_with_unread_batch_fails_the_request(void)
{
    ems_log_set_level(EMS_LOG_ERROR);
    fx_t fx;
    memset(&fx, 0, sizeof fx);
    atomic_store(&fx.server_fd, -1);
    snprintf(fx.dir, sizeof fx.dir, "/tmp/ems-pgtest.XXXXXX");
    EMS_CHECK(mkdtemp(fx.dir) != NULL);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.5432", fx.dir);
    fx.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    EMS_CHECK(fx.listen_fd >= 0);
    EMS_CHECK(bind(fx.listen_fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    EMS_CHECK(listen(fx.listen_fd, 4) == 0);
    EMS_CHECK(pthread_create(&fx.thread, NULL, server_main, &fx) == 0);

    uv_loop_t loop;
    uv_loop_init(&loop);
    char dsn[160];
    snprintf(dsn, sizeof dsn, "host=%s port=5432 user=test dbname=test sslmode=disable", fx.dir);
    ems_pg_opts_t o = {.conninfo = dsn, .name = "pg test", .on_up = on_up, .on_down = on_down,
                       .ud = &fx, .backoff_min_ms = 60000, .backoff_max_ms = 60000};
    EMS_CHECK_INT(ems_pg_new(&loop, &o, &fx.pg), ==, 0);
    uv_timer_init(&loop, &fx.tick);
    uv_timer_init(&loop, &fx.deadline);
    fx.tick.data = fx.deadline.data = &fx;
    uv_timer_start(&fx.tick, tick_cb, 5, 5);
    uv_timer_start(&fx.deadline, deadline_cb, 5000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&fx.tick, NULL);
    uv_close((uv_handle_t *)&fx.deadline, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(uv_loop_close(&loop), ==, 0);
    pthread_join(fx.thread, NULL);
    close(fx.listen_fd);
    unlink(sa.sun_path);
    rmdir(fx.dir);

    EMS_CHECK_INT(fx.ups, ==, 1);
    EMS_CHECK(fx.killed);
    /* The batch must end (its outcome unknown: EMS_ECLOSED) and the
     * connection must be reported down, so the writer reconnects and
     * resends instead of waiting forever. */
    EMS_CHECK_INT(fx.dones, ==, 1);
    EMS_CHECK(!fx.done_by_close); /* not by our close at the deadline */
    EMS_CHECK_INT(fx.done_status, ==, EMS_ECLOSED);
    EMS_CHECK_INT(fx.downs, >=, 1);
}

int main(void)
{
    EMS_RUN(test_reset_with_unread_batch_fails_the_request);
    EMS_TEST_END();
}
