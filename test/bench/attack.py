#!/usr/bin/python3
"""attack.py: abusive clients against one gateway, for scripts/bench-fleet.sh --attack.

While the fleet benchmark's devices send at 1 Hz, this runs, for --duration
seconds, against https://HOST:PORT (or http with --plain):

  slow TLS clients   --slow N (1000): each completes a TLS handshake (the
                     gateway's expensive part), then sends its HTTP upgrade
                     request one byte a second and never finishes it; when
                     the gateway closes it, it connects again after 0.5 s.
                     Spread over --src-count source addresses 127.0.1.x, so a
                     per-address cap alone does not stop them.
  pipelining clients --pipeline N (60): each sends GET /healthz requests
                     back to back and never reads an answer.
  login bursts       --burst N (200) wrong-password logins for --user sent at
                     once, every --burst-every seconds (10), from one address.
  a legitimate user  logs in with --password every 2 s from its own address
                     and records how long it took.

It prints one JSON object (and writes it to --out): what each kind of client
achieved (handshakes completed, closes, HTTP statuses) and the legitimate
login's latency. The devices' ack latency is in bench-fleet's own report.
"""
import argparse
import asyncio
import json
import ssl
import sys
import time


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


class Attack:
    def __init__(self, a):
        self.a = a
        self.stop_at = time.monotonic() + a.duration
        self.ctx = None
        if not a.plain:
            self.ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl._create_unverified_context()
            if not a.ca:
                self.ctx.check_hostname = False
        self.st = {
            "slow": {"handshakes": 0, "connect_failed": 0, "closed_by_gateway": 0},
            "pipeline": {"requests_written": 0, "closed_by_gateway": 0, "connect_failed": 0},
            "burst": {"sent": 0, "status": {}},
            "login": {"ok": 0, "failed": 0, "ms": []},
        }

    def live(self):
        return time.monotonic() < self.stop_at

    async def connect(self, src):
        return await asyncio.wait_for(
            asyncio.open_connection(self.a.host, self.a.port, ssl=self.ctx,
                                    server_hostname="localhost" if self.ctx else None,
                                    local_addr=(src, 0)), 15)

    async def slow_client(self, i):
        src = "127.0.1.%d" % (1 + i % self.a.src_count)
        st = self.st["slow"]
        req = b"GET /ws/device/attacker HTTP/1.1\r\nHost: localhost\r\n"
        while self.live():
            try:
                r, w = await self.connect(src)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                st["connect_failed"] += 1
                await asyncio.sleep(0.5)
                continue
            st["handshakes"] += 1
            try:
                for b in req * 100:
                    if not self.live():
                        break
                    w.write(bytes([b]))
                    await w.drain()
                    try:
                        if await asyncio.wait_for(r.read(1), 1.0) == b"":
                            st["closed_by_gateway"] += 1
                            break
                    except asyncio.TimeoutError:
                        pass
            except (OSError, ssl.SSLError, ConnectionError):
                st["closed_by_gateway"] += 1
            w.close()
            await asyncio.sleep(0.5)

    async def pipeline_client(self, i):
        src = "127.0.2.%d" % (1 + i % 4)
        st = self.st["pipeline"]
        chunk = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" * 100
        while self.live():
            try:
                _, w = await self.connect(src)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                st["connect_failed"] += 1
                await asyncio.sleep(1)
                continue
            try:
                while self.live():
                    w.write(chunk)
                    # drain blocks once the gateway stops reading: wait.
                    try:
                        await asyncio.wait_for(w.drain(), 1.0)
                        st["requests_written"] += 100
                    except asyncio.TimeoutError:
                        pass
            except (OSError, ssl.SSLError, ConnectionError):
                st["closed_by_gateway"] += 1
            w.transport.abort()
            await asyncio.sleep(1)

    async def login(self, src, user, password):
        body = json.dumps({"username": user, "password": password}).encode()
        r, w = await self.connect(src)
        try:
            w.write(b"POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            await w.drain()
            line = await asyncio.wait_for(r.readline(), 60)
            return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
        finally:
            w.close()

    async def one_wrong(self, st):
        try:
            code = await self.login("127.0.3.1", self.a.user, "wrong-password")
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError, IndexError):
            code = 0
        st["status"][str(code)] = st["status"].get(str(code), 0) + 1

    async def bursts(self):
        st = self.st["burst"]
        while self.live():
            st["sent"] += self.a.burst
            await asyncio.gather(*(self.one_wrong(st) for _ in range(self.a.burst)))
            await asyncio.sleep(self.a.burst_every)

    async def legit(self):
        st = self.st["login"]
        await asyncio.sleep(1)
        while self.live():
            t0 = time.monotonic()
            try:
                code = await self.login("127.0.4.1", self.a.user, self.a.password)
            except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError, IndexError):
                code = 0
            ms = (time.monotonic() - t0) * 1000
            if code == 200:
                st["ok"] += 1
                st["ms"].append(ms)
            else:
                st["failed"] += 1
            await asyncio.sleep(2)

    async def run(self):
        tasks = [asyncio.create_task(self.slow_client(i)) for i in range(self.a.slow)]
        tasks += [asyncio.create_task(self.pipeline_client(i)) for i in range(self.a.pipeline)]
        if self.a.burst:
            tasks.append(asyncio.create_task(self.bursts()))
        tasks.append(asyncio.create_task(self.legit()))
        await asyncio.sleep(self.a.duration)
        await asyncio.sleep(2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ms = self.st["login"].pop("ms")
        self.st["login"].update({"p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99),
                                 "max_ms": max(ms) if ms else None})
        return self.st


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--plain", action="store_true", help="http instead of https")
    p.add_argument("--ca", help="CA certificate of the gateway")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--slow", type=int, default=1000)
    p.add_argument("--src-count", type=int, default=50)
    p.add_argument("--pipeline", type=int, default=60)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--burst-every", type=float, default=10)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--out")
    a = p.parse_args()
    st = asyncio.run(Attack(a).run())
    text = json.dumps(st, sort_keys=True)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
