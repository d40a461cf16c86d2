#!/usr/bin/python3
# 52-gateway-limits: the real ems-gateway (TLS) against clients that never
# read or never authenticate (common/net/server.h, docs/deploy-cloud.md
# "Connection limits").
#
# Proves: clients that pipeline requests and never read their answers do
# not grow the gateway's memory (VmRSS and ems_gateway_http_output_bytes),
# the gateway keeps serving a device and REST meanwhile, the queue is
# released when they go, and a pipelining client that reads gets every
# answer in order; idle connections from one address stop at
# max_unauth_per_addr while other addresses get in; filling every slot with
# idle connections from many addresses does not lock a device out (the
# reserve, and the oldest idle one makes room); a handshake that stalls is
# closed at handshake_timeout_ms.
#
# Linux routes all of 127/8 to lo, so a client binds 127.0.0.N as its
# source address to look like another host.
import asyncio
import importlib.util
import json
import os
import socket
import ssl
import time

spec = importlib.util.spec_from_file_location(
    "gwlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gw)

# ASan keeps freed memory in quarantine (256 MiB by default) to catch use
# after free; answers written and freed would show up in VmRSS as if held.
# A small quarantine lets VmRSS measure what the gateway really keeps.
if "quarantine_size_mb" not in os.environ.get("ASAN_OPTIONS", ""):
    os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                  ":quarantine_size_mb=8").lstrip(":")

tap = gw.Tap()
packet = gw.packet

PER_ADDR = 24
MAX_CONN = 100
RESERVE_PCT = 40                       # unauthenticated: at most 116 - 40 = 76
SERVER_MAX = MAX_CONN + 16             # gw.c leaves 16 over for clear 429s
HANDSHAKE_MS = 2000
BIG = 256 * 1024                       # a static file, the answer attackers ask for


def rss_kb(env):
    with open(f"/proc/{env.gw.p.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metric(env, name):
    """The value of one series in /metrics (0 if absent)."""
    body = env.http("GET", "/metrics")[2].decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def tcp(env, src, rcvbuf=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", env.port))
    return s


def tls(env, src, rcvbuf=0):
    s = env.ssl_ctx().wrap_socket(tcp(env, src, rcvbuf), server_hostname="localhost")
    return s


def still_open(s):
    """True while the gateway keeps the socket open (no EOF, no reset)."""
    s.setblocking(False)
    try:
        # the raw socket under TLS too: peeking consumes nothing
        return socket.socket.recv(s, 1, socket.MSG_PEEK) != b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


async def device_ack(env, dev, token, seq):
    """Connects as the device, sends one packet; True once it is acked."""
    ws = await env.device(dev, token)
    try:
        await gw.recv_json(ws)  # welcome
        await ws.send(json.dumps(packet(dev, seq)))
        return seq in await gw.acked(ws, [seq], timeout=10)
    finally:
        await ws.close()


# ------------------------------------------------------------ unread answers

async def pipeline_unread(env, socks, seconds):
    """Each socket pipelines GETs of the big file and never reads. Returns
    the largest ems_gateway_http_output_bytes seen meanwhile."""
    # 56 answers of 256 KiB: 14 MiB, under the 16 MiB per-connection cap
    # (gw.c), so without the pause each one would be held, not refused.
    req = f"GET /assets/big.js HTTP/1.1\r\nHost: localhost:{env.port}\r\n\r\n".encode() * 56
    for s in socks:
        s.setblocking(False)
    off = [0] * len(socks)
    most = 0
    end = time.time() + seconds
    while time.time() < end:
        for i, s in enumerate(socks):
            if off[i] >= len(req):
                continue
            try:
                off[i] += s.send(req[off[i]:off[i] + 4096])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
            except OSError:
                off[i] = len(req)
        most = max(most, metric(env, "ems_gateway_http_output_bytes"))
        await asyncio.sleep(0.02)
    return most


def read_pipelined(env, paths):
    """Sends GETs for `paths` in one write and reads the answers in order;
    returns the list of (status, body)."""
    s = tls(env, "127.0.0.1")
    s.settimeout(10)
    s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for p in paths))
    buf = b""
    out = []
    while len(out) < len(paths):
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        n = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v)
        while len(buf) < n:
            buf += s.recv(65536)
        out.append((int(lines[0].split()[1]), buf[:n]))
        buf = buf[n:]
    s.close()
    return out


async def unread_tests(env, tok):
    base = rss_kb(env)
    # 20 clients x 56 requests x 256 KiB: 280 MiB of answers if all were held.
    socks = [tls(env, "127.0.0.3", rcvbuf=4096) for _ in range(20)]
    most = await pipeline_unread(env, socks, 4)
    grew = (rss_kb(env) - base) // 1024
    tap.note(f"20 non-readers: queued output at most {most / 1048576:.1f} MiB, "
             f"VmRSS grew {grew} MiB")
    # out_pause (64 KiB) plus the 256 KiB answer that crossed it, per client
    tap.ok("clients that pipeline and never read hold little queued output",
           0 < most <= 20 * (64 * 1024 + BIG + 4096), most)
    tap.ok("... and the gateway's memory does not grow with what they ask for",
           grew < 64, f"{grew} MiB")
    tap.ok("a device still connects and gets its ack meanwhile",
           await device_ack(env, "lim_1", tok["lim_1"], 1))
    st, h, b = env.http("GET", "/healthz")
    tap.eq("REST still answers meanwhile", st, 200)
    tap.ok("the non-readers are still connected (not read, not dropped)",
           sum(still_open(s) for s in socks) == 20)
    for s in socks:
        s.close()
    ok = gw.wait_for(lambda: metric(env, "ems_gateway_http_output_bytes") == 0, 10, step=0.2)
    tap.ok("their queued answers are released when they go", ok)
    # Memory is reusable: a second round does not add to the first.
    after1 = rss_kb(env)
    socks = [tls(env, "127.0.0.3", rcvbuf=4096) for _ in range(20)]
    await pipeline_unread(env, socks, 3)
    for s in socks:
        s.close()
    grew2 = (rss_kb(env) - after1) // 1024
    tap.ok("a second round of the same reuses the memory", grew2 < 32, f"{grew2} MiB")

    paths = [f"/assets/big.js?{i}" if i % 3 == 0 else ("/healthz" if i % 3 == 1 else "/")
             for i in range(30)]
    got = read_pipelined(env, paths)
    want_len = [BIG if i % 3 == 0 else None for i in range(30)]
    tap.ok("a pipelining client that reads gets all 30 answers, in order",
           all(st == 200 for st, _ in got) and
           all(len(b) == want_len[i] for i, (_, b) in enumerate(got) if want_len[i]) and
           all(b.startswith(b"<!doctype") for i, (_, b) in enumerate(got) if i % 3 == 2),
           [(st, len(b)) for st, b in got])


# ------------------------------------------------------------ unauthenticated

async def per_address_tests(env, tok):
    before = metric(env, 'ems_gateway_connections_refused_total{reason="per_address"}')
    socks = [tcp(env, "127.0.0.4") for _ in range(PER_ADDR + 16)]
    await asyncio.sleep(0.5)
    open_n = sum(still_open(s) for s in socks)
    tap.eq(f"idle connections from one address stop at max_unauth_per_addr ({PER_ADDR})",
           open_n, PER_ADDR)
    tap.ok("a device from another address still gets in, while they wait",
           await device_ack(env, "lim_1", tok["lim_1"], 2))
    other = tcp(env, "127.0.0.5")
    await asyncio.sleep(0.2)
    tap.ok("another address's idle connection is accepted", still_open(other))
    gw.wait_for(lambda: metric(env, 'ems_gateway_connections_refused_total{reason="per_address"}')
                >= before + 16, 5, step=0.3)
    got = metric(env, 'ems_gateway_connections_refused_total{reason="per_address"}') - before
    tap.eq("refusals are counted in /metrics", got, 16)
    log = env.gw.text()
    tap.ok("refusals are logged as one line with a count, not one per connection",
           0 < log.count("refused over the per-address cap") <= 2, log[-2000:])
    for s in socks + [other]:
        s.close()


async def reserve_tests(env, tok):
    # Earlier connections must be gone, so the flood below takes every slot.
    gw.wait_for(lambda: metric(env, "ems_gateway_tcp_connections") <= 1, 10, step=0.2)
    # More than every slot, from six addresses (each within the per-address cap).
    socks = []
    for a in range(6):
        socks += [tcp(env, f"127.0.0.{20 + a}") for _ in range(PER_ADDR)]
    await asyncio.sleep(0.1)
    # At once, well within the handshake deadline that would free slots.
    try:
        got_in = await device_ack(env, "lim_2", tok["lim_2"], 1)
    except Exception as e:
        got_in = e
    tap.ok("a device still gets in with every unauthenticated slot taken", got_in is True, got_in)
    n = sum(still_open(s) for s in socks)
    tap.note(f"{len(socks)} idle connections offered, {n} still open")
    tap.ok("idle unauthenticated connections take at most max_connections minus the reserve",
           n <= SERVER_MAX - MAX_CONN * RESERVE_PCT // 100, n)
    for s in socks:
        s.close()


async def deadline_tests(env):
    s = tcp(env, "127.0.0.6")
    s.sendall(b"\x16\x03\x01\x00\x80\x01")  # the start of a ClientHello, then silence
    t0 = time.time()
    s.settimeout(HANDSHAKE_MS / 1000 * 4)
    try:
        closed = s.recv(1) == b""
    except socket.timeout:
        closed = False
    except OSError:
        closed = True
    took = time.time() - t0
    tap.ok(f"a stalled handshake is closed at handshake_timeout_ms ({took:.1f} s)",
           closed and HANDSHAKE_MS / 1000 * 0.7 < took < HANDSHAKE_MS / 1000 * 2.5, took)
    s.close()


async def main():
    env = gw.Env(tap, tls=True)
    try:
        with open(os.path.join(env.static, "assets", "big.js"), "wb") as f:
            f.write(b"/" * BIG)
        env.start_pg()
        tok = {d: env.add_device(d) for d in ("lim_1", "lim_2")}
        env.start_dbwriter()
        env.start_gateway(max_unauth_per_addr=PER_ADDR, max_connections=MAX_CONN,
                          connection_reserve_pct=RESERVE_PCT, handshake_timeout_ms=HANDSHAKE_MS,
                          rate_burst=1000, rate_per_s=1000)
        await unread_tests(env, tok)
        await per_address_tests(env, tok)
        await reserve_tests(env, tok)
        await deadline_tests(env)
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, f"{e!r}")
        tap.note(traceback.format_exc())
    finally:
        rc = env.close()
        tap.eq("gateway exits 0 after SIGTERM", rc, 0)


asyncio.run(main())
tap.done()
