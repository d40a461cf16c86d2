#!/usr/bin/env python3
"""demo-webhook.py: a tiny receiver of the gateway's alarm webhooks.

It prints one line per alarm event it receives, after checking it the way
docs/alarms.md ("Webhooks") asks a receiver to:

  - the signature: X-EMS-Signature is "sha256=" and the hex HMAC-SHA256 of
    "<X-EMS-Timestamp>.<raw body>" under the shared secret, compared in
    constant time; a wrong or missing signature is answered 401 (the gateway
    retries, then dead-letters the event);
  - the timestamp: older (or newer) than --max-age seconds is refused 401
    as a possible replay;
  - the event id: delivery is at least once, so an X-EMS-Event-Id seen
    before is answered 200 again but printed as a duplicate.

Python 3 standard library only. Used by `make demo` (scripts/demo.sh) and
by test/suites/70-dashboard.sh.

    scripts/demo-webhook.py --secret-file FILE [--listen 127.0.0.1] [--port 0]
                            [--port-file FILE] [--max-age 300]

With --port 0 the system picks a free port; --port-file receives it once
the receiver listens. SIGTERM or Ctrl-C stops it.
"""

import argparse
import hashlib
import hmac
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

MAX_BODY = 1 << 20


def log(line):
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} {line}", flush=True)


def expected_signature(secret, timestamp, body):
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def describe(event):
    """One line for an alarm event of docs/alarms.md."""
    a = event.get("alarm") or {}
    who = event.get("actor") or "?"
    parts = [
        f"{event.get('type', '?'):<18}",
        f"#{event.get('event_id', '?')}",
        f"alarm {a.get('alarm_id', '?')}",
        f"{a.get('device_id', '?')} {a.get('rule', '?')} ({a.get('severity', '?')})",
        f"state {a.get('state', '?')}",
        f"by {who}",
    ]
    line = "  ".join(parts)
    if a.get("message"):
        line += f": {a['message']}"
    if event.get("type") == "alarm.cleared" and a.get("clear_reason"):
        line += f" [{a['clear_reason']}]"
    return line


class Receiver(BaseHTTPRequestHandler):
    server_version = "ems-demo-webhook/1"
    secret = b""
    max_age = 300
    seen = set()

    def log_message(self, fmt, *args):  # the default logs every request to stderr
        pass

    def answer(self, code, text):
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            log(f"REJECTED: body length {self.headers.get('Content-Length')!r}")
            return self.answer(413, "bad length")
        body = self.rfile.read(n)
        ts = self.headers.get("X-EMS-Timestamp") or ""
        sig = self.headers.get("X-EMS-Signature") or ""
        eid = self.headers.get("X-EMS-Event-Id") or ""
        if not ts.isdigit() or not hmac.compare_digest(sig, expected_signature(self.secret, ts, body)):
            log(f"REJECTED event {eid or '?'}: bad signature")
            return self.answer(401, "bad signature")
        age = time.time() - int(ts)
        if abs(age) > self.max_age:
            log(f"REJECTED event {eid}: timestamp {int(age)} s old (replay?)")
            return self.answer(401, "stale timestamp")
        try:
            event = json.loads(body)
        except ValueError:
            log(f"REJECTED event {eid}: body is not JSON")
            return self.answer(400, "not JSON")
        if eid in self.seen:
            log(f"duplicate of event #{eid} (delivered before; at least once)")
            return self.answer(200, "duplicate")
        self.seen.add(eid)
        log(describe(event) + "  [signature ok]")
        return self.answer(200, "ok")


def main():
    p = argparse.ArgumentParser(description="Print the ems gateway's alarm webhooks, checking their signatures.")
    p.add_argument("--secret-file", required=True, help="the HMAC key (the gateway's alarm_webhook_secret_file)")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--max-age", type=int, default=300, help="refuse timestamps further from now, seconds")
    args = p.parse_args()

    with open(args.secret_file, "rb") as f:
        secret = f.read()
    # The gateway takes the file's first 256 bytes without the newlines and
    # carriage returns at their end (cloud/gateway/gw_webhook.c); so do we.
    secret = secret[:256].rstrip(b"\r\n")
    if not secret:
        sys.exit(f"{args.secret_file}: the secret is empty")
    Receiver.secret = secret
    Receiver.max_age = args.max_age

    srv = HTTPServer((args.listen, args.port), Receiver)
    port = srv.server_address[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    log(f"listening on http://{args.listen}:{port}/ for alarm webhooks")
    try:
        srv.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
