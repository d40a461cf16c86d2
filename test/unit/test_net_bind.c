/* test_net_bind.c: ems_conn_options_t.bind_addr, the local address a client
 * connection binds before connecting (conn.h). The fleet benchmark spreads
 * its connections over several 127.0.0.x source addresses with it.
 *
 * Real loopback sockets: a libuv listener on 127.0.0.1, port 0.
 */
#include "conn.h"
#include "error.h"
#include "ems_test.h"

#include <uv.h>

typedef struct {
    uv_loop_t loop;
    uv_tcp_t listener;
    ems_conn_t *accepted;
    char server_saw[64]; /* peer address as the server sees it */
    int client_open, client_closed, client_status;
    int server_closed;
} fx_t;

static fx_t F;

static void s_on_close(ems_conn_t *c, int status)
{
    (void)c, (void)status;
    F.server_closed = 1;
}

static const ems_conn_callbacks_t s_cbs = {NULL, NULL, NULL, NULL, s_on_close};

static void on_connection(uv_stream_t *l, int status)
{
    if (status < 0)
        return;
    ems_conn_t *c;
    if (ems_conn_accept(l, NULL, NULL, &s_cbs, NULL, &c) == 0) {
        F.accepted = c;
        ems_conn_peer(c, F.server_saw, sizeof F.server_saw);
    }
}

static void c_on_open(ems_conn_t *c)
{
    F.client_open = 1;
    ems_conn_close(c, 1000);
    if (F.accepted)
        ems_conn_close(F.accepted, 1000);
}

static void c_on_close(ems_conn_t *c, int status)
{
    (void)c;
    F.client_closed = 1;
    F.client_status = status;
}

static const ems_conn_callbacks_t c_cbs = {c_on_open, NULL, NULL, NULL, c_on_close};

static int fx_start(void)
{
    memset(&F, 0, sizeof F);
    EMS_CHECK_INT(uv_loop_init(&F.loop), ==, 0);
    EMS_CHECK_INT(uv_tcp_init(&F.loop, &F.listener), ==, 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    EMS_CHECK_INT(uv_tcp_bind(&F.listener, (const struct sockaddr *)&a, 0), ==, 0);
    EMS_CHECK_INT(uv_listen((uv_stream_t *)&F.listener, 16, on_connection), ==, 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&F.listener, (struct sockaddr *)&ss, &len);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void fx_run(void)
{
    for (int i = 0; i < 500 && !(F.client_closed && (F.server_closed || !F.accepted)); i++)
        uv_run(&F.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&F.listener, NULL);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    EMS_CHECK_INT(uv_loop_close(&F.loop), ==, 0);
}

/* The server sees the bound source address, not the default 127.0.0.1. */
static void test_bind_sets_source_address(void)
{
    int port = fx_start();
    struct sockaddr_in src;
    uv_ip4_addr("127.0.0.7", 0, &src);
    ems_conn_options_t o = {.bind_addr = (const struct sockaddr *)&src};
    ems_conn_t *c;
    EMS_CHECK_INT(ems_conn_connect(&F.loop, "127.0.0.1", (uint16_t)port, NULL, NULL, &o, &c_cbs,
                                   NULL, &c),
                  ==, 0);
    fx_run();
    EMS_CHECK(F.client_open);
    EMS_CHECK_INT(strncmp(F.server_saw, "127.0.0.7:", 10), ==, 0);
}

/* Without the option the kernel chooses (127.0.0.1 on loopback). */
static void test_no_bind_uses_default(void)
{
    int port = fx_start();
    ems_conn_t *c;
    EMS_CHECK_INT(ems_conn_connect(&F.loop, "127.0.0.1", (uint16_t)port, NULL, NULL, NULL, &c_cbs,
                                   NULL, &c),
                  ==, 0);
    fx_run();
    EMS_CHECK(F.client_open);
    EMS_CHECK_INT(strncmp(F.server_saw, "127.0.0.1:", 10), ==, 0);
}

/* An address this host does not have cannot be bound: the connection fails
 * with the bind error (nothing is sent anywhere). */
static void test_bind_to_foreign_address_fails(void)
{
    int port = fx_start();
    struct sockaddr_in src;
    uv_ip4_addr("192.0.2.1", 0, &src); /* TEST-NET-1, never local */
    ems_conn_options_t o = {.bind_addr = (const struct sockaddr *)&src};
    ems_conn_t *c;
    EMS_CHECK_INT(ems_conn_connect(&F.loop, "127.0.0.1", (uint16_t)port, NULL, NULL, &o, &c_cbs,
                                   NULL, &c),
                  ==, 0);
    fx_run();
    EMS_CHECK(!F.client_open);
    EMS_CHECK(F.client_closed);
    EMS_CHECK_INT(F.client_status, ==, UV_EADDRNOTAVAIL);
    EMS_CHECK(F.accepted == NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    EMS_RUN(test_bind_sets_source_address);
    EMS_RUN(test_no_bind_uses_default);
    EMS_RUN(test_bind_to_foreign_address_fails);
    EMS_TEST_END();
}
