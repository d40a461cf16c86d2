/* test_net_interop.c: our WebSocket server against an independent client,
 * Python's `websockets` (Debian's /usr/bin/python3), over TLS on loopback.
 * The Python side sends what our own client never sends (fragmented
 * messages, pings with payload) and checks our answers; the C side checks
 * the Python process's exit status. Skipped if /usr/bin/python3 has no
 * websockets module. */
#include <string.h>
#include <unistd.h>

#include "ems_test.h"
#include "error.h"
#include "server.h"
#include "test_net_util.h"
#include "ws.h"

static const char PY[] =
    "import asyncio, ssl, sys\n"
    "import websockets\n"
    "url, ca = sys.argv[1], sys.argv[2]\n"
    "def code(e):\n"
    "    return e.rcvd.code if e.rcvd else None\n"
    "async def main():\n"
    "    ctx = ssl.create_default_context(cafile=ca)\n"
    "    async with websockets.connect(url + '/ws/echo', ssl=ctx, max_size=2**20,\n"
    "            ping_interval=None, extra_headers={'Authorization': 'Bearer py'}) as ws:\n"
    "        await ws.send('hello')\n"
    "        assert await ws.recv() == 'hello'\n"
    "        await ws.send(['frag', 'mented ', '\\u00e9'])\n"
    "        r = await ws.recv()\n"
    "        assert r == 'fragmented \\u00e9', r\n"
    "        big = 'x' * 50000\n"
    "        await ws.send(big)\n"
    "        assert await ws.recv() == big\n"
    "        pong = await ws.ping(b'abc')\n"
    "        await asyncio.wait_for(pong, 5)\n"
    "        await ws.send('y' * 70000)\n"
    "        try:\n"
    "            await asyncio.wait_for(ws.recv(), 5)\n"
    "            sys.exit('no close after an oversized message')\n"
    "        except websockets.ConnectionClosed as e:\n"
    "            assert code(e) == 1009, e\n"
    "    async with websockets.connect(url + '/ws/bye', ssl=ctx) as ws:\n"
    "        await ws.send('x')\n"
    "        try:\n"
    "            await asyncio.wait_for(ws.recv(), 5)\n"
    "            sys.exit('no close')\n"
    "        except websockets.ConnectionClosed as e:\n"
    "            assert code(e) == 4001, e\n"
    "    try:\n"
    "        async with websockets.connect(url + '/ws/denied', ssl=ctx):\n"
    "            sys.exit('refused upgrade was accepted')\n"
    "    except websockets.InvalidStatusCode as e:\n"
    "        assert e.status_code == 401, e\n"
    "    print('# python client ok', file=sys.stderr)\n"
    "asyncio.run(main())\n";

typedef struct {
    uv_loop_t loop;
    ems_server_t *srv;
    int exited, stopped;
    int64_t exit_status;
    int msgs, closes;
    int bye;
    char auth[64];
} interop_t;

static interop_t I;
static const char *certs; /* made once in main */

static void on_message(ems_ws_t *ws, const char *data, size_t len, bool binary)
{
    (void)binary;
    I.msgs++;
    if (ems_ws_user(ws) == &I.bye) {
        ems_ws_close(ws, 4001, "replaced by a newer connection");
        return;
    }
    EMS_CHECK_INT(ems_ws_send_text(ws, data, len), ==, 0);
}

static void on_close(ems_ws_t *ws, const ems_ws_close_info_t *info)
{
    (void)ws;
    fprintf(stderr, "# server side closed: status %d sent %d received %d %s\n", info->status,
            info->code_sent, info->code_received, info->detail);
    I.closes++;
}

static const ems_ws_callbacks_t cbs = {NULL, on_message, on_close};

static void handler(ems_server_req_t *req, void *user)
{
    (void)user;
    const ems_http_msg_t *m = ems_server_req_msg(req);
    ems_ws_t *ws;
    if (strcmp(m->path, "/ws/denied") == 0) {
        ems_server_respond(req, 401, "text/plain", NULL, "no", 2);
        return;
    }
    if (strcmp(m->path, "/ws/echo") == 0) {
        const char *a = ems_http_msg_header(m, "Authorization");
        snprintf(I.auth, sizeof I.auth, "%s", a ? a : "");
    }
    void *tag = strcmp(m->path, "/ws/bye") == 0 ? (void *)&I.bye : (void *)&I;
    if (ems_server_upgrade(req, NULL, &cbs, tag, NULL, &ws) != 0)
        EMS_FAIL("upgrade failed");
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    I.exited = 1;
    I.exit_status = sig ? 128 + sig : status;
    uv_close((uv_handle_t *)p, NULL);
}

static void on_stopped(void *arg)
{
    (void)arg;
    I.stopped = 1;
}

static void test_python_websockets_client(void)
{
    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import websockets' 2>/dev/null") != 0) {
        EMS_SKIP("/usr/bin/python3 has no websockets module (scripts/deps.sh installs "
                 "python3-websockets)");
    }
    memset(&I, 0, sizeof I);
    uv_loop_init(&I.loop);
    ems_tls_config_t *tls;
    EMS_CHECK_INT(ems_tls_server_config_new(net_path(certs, "chain.crt"),
                                            net_path(certs, "server.key"), &tls),
                  ==, 0);
    ems_server_options_t o;
    memset(&o, 0, sizeof o);
    o.host = "127.0.0.1";
    o.tls = tls;
    EMS_CHECK_INT(ems_server_start(&I.loop, &o, handler, NULL, &I.srv), ==, 0);
    char url[64], ca[512];
    snprintf(url, sizeof url, "wss://localhost:%u", (unsigned)ems_server_port(I.srv));
    snprintf(ca, sizeof ca, "%s", net_path(certs, "ca.crt"));
    char *args[] = {"/usr/bin/python3", "-c", (char *)PY, url, ca, NULL};
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    uv_stdio_container_t stdio[3] = {
        {UV_IGNORE, {0}}, {UV_INHERIT_FD, {.fd = 2}}, {UV_INHERIT_FD, {.fd = 2}}};
    po.file = args[0];
    po.args = args;
    po.exit_cb = on_exit_cb;
    po.stdio = stdio;
    po.stdio_count = 3;
    uv_process_t proc;
    EMS_CHECK_INT(uv_spawn(&I.loop, &proc, &po), ==, 0);
    EMS_CHECK(net_run_until(&I.loop, &I.exited, 30000));
    EMS_CHECK_INT(I.exit_status, ==, 0);
    EMS_CHECK_STR(I.auth, "Bearer py");
    EMS_CHECK_INT(I.msgs, ==, 4); /* hello, fragmented, big, x */
    while (I.closes < 2)
        uv_run(&I.loop, UV_RUN_ONCE);
    ems_server_stop(I.srv, on_stopped, NULL);
    EMS_CHECK(net_run_until(&I.loop, &I.stopped, 5000));
    ems_tls_config_unref(tls);
    net_loop_finish(&I.loop);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    certs = net_mkcerts();
    EMS_RUN(test_python_websockets_client);
    net_rmdir(certs);
    EMS_TEST_END();
}
