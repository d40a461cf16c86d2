#!/usr/bin/python3
"""60-edge-buffer: store-and-forward on the real ems-edge (issue 6, items 1-5).

Against a fake cloud on loopback that acks or does not (docs/edge-daemon.md,
"Backfill"): acks delete packets from the buffer and nothing else does;
during an outage packets keep being buffered; after the reconnect the live
packet goes first and the backlog follows in telemetry_batch messages with
"backfill": true, at most `backfill_inflight` batches unacknowledged, while
live packets keep flowing; every seq arrives, without a gap; an overdue ack
makes the edge send again; a nack drops the packet; kill -9 and a restart
continue the seq without reuse and backfill what was not acknowledged.
Some scenarios use the TEST-ONLY tick_ms to make hundreds of packets in
seconds.
"""
import asyncio
import importlib.util
import json
import os
import time

spec = importlib.util.spec_from_file_location(
    "edgelib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "60-edge-lib.py"))
lib = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lib)


def all_seqs(cloud, since=0.0):
    return [p["seq"] for _, p in cloud.telemetry(since)]


def no_gaps(seqs, first=1):
    s = set(seqs)
    return s == set(range(first, max(s) + 1)) if s else False


async def acks_and_outage(tap, env):
    cloud = await env.cloud().start()
    edge = await env.edge("edge-a").start(cloud.url(), env.token_file, ca=env.ca)
    await lib.next_packets(cloud, 4, 8)
    s = await edge.status()
    tap.ok("acked packets are deleted from the buffer",
           s and s["buffer"]["pending"] <= 1 and s["buffer"]["acked_total"] >= 3, s and s["buffer"])

    cloud.ack_filter = lambda seq: False
    await lib.next_packets(cloud, 4, 8)
    s = await edge.status()
    unacked = s["buffer"]["pending"] if s else 0
    tap.ok("without acks the packets stay in the buffer", unacked >= 4, s and s["buffer"])
    ps = [m.obj for m in cloud.of("telemetry")]
    tap.ok("the backlog field counts them", ps[-1].get("backlog", 0) >= 3, ps[-1].get("backlog"))
    cloud.ack_filter = None

    # The outage: the cloud goes away for 5 s; the edge keeps buffering.
    before = max(all_seqs(cloud))
    await cloud.stop()
    await asyncio.sleep(5)
    t_back = time.monotonic()
    await cloud.start()
    conn = await cloud.wait(lambda: cloud.conns >= 2 and cloud.conns, 10)
    await cloud.wait(lambda: any(m.kind == "telemetry-batch" for m in cloud.msgs if m.conn == conn), 8)
    caught = await edge.wait_log(r"backfill: caught up", 10, t_back)
    tap.ok("after the reconnect the backlog is sent and the edge logs it caught up", caught, edge.tail(8))
    on_new = [m for m in cloud.msgs if m.conn == conn]
    kinds = [m.kind for m in on_new]
    tap.ok("on the new link: device_info, then a live packet, then batches",
           kinds[:2] == ["device-info", "telemetry"] and "telemetry-batch" in kinds
           and kinds.index("telemetry-batch") > 1, kinds[:6])
    first_live = on_new[1].obj if len(on_new) > 1 else {}
    tap.ok("the first live packet is not marked backfill and reports the backlog",
           "backfill" not in first_live and first_live.get("backlog", 0) > 5, json.dumps(first_live)[:300])
    batched = [p for m in on_new if m.kind == "telemetry-batch" for p in m.obj["packets"]]
    tap.ok("every packet in a batch says backfill: true, each batch 1..100 packets",
           batched and all(p.get("backfill") is True for p in batched)
           and all(1 <= len(m.obj["packets"]) <= 100 for m in on_new if m.kind == "telemetry-batch"),
           len(batched))
    gap = [p["seq"] for p in batched if p["seq"] > before]
    tap.ok("the packets made during the outage are in the backfill", len(gap) >= 4, sorted(gap))
    tap.ok("the packets that were never acked before the outage are backfilled too",
           set(range(before - unacked + 1, before + 1)) <= {p["seq"] for p in batched},
           (before, unacked, sorted(p["seq"] for p in batched)[:12]))
    off = sorted((p for p in batched if p["seq"] > before), key=lambda p: p["seq"])
    steps = [lib_ts(b["timestamp"]) - lib_ts(a["timestamp"]) for a, b in zip(off, off[1:])]
    tap.ok("packets made while offline keep their own timestamps, 1 s apart",
           steps and all(abs(x - 1000) <= 50 for x in steps), steps)
    await lib.next_packets(cloud, 2, 4)
    seqs = all_seqs(cloud)
    tap.ok(f"every seq from 1 to {max(seqs)} reached the cloud (no gap)", no_gaps(seqs),
           sorted(set(range(1, max(seqs) + 1)) - set(seqs)))
    bad = [e for _, p in cloud.telemetry() for e in lib.schema_errors(p)[:1]]
    bad += [e for m in cloud.msgs if m.kind == "telemetry-batch" for e in lib.schema_errors(m.obj)[:1]]
    tap.ok("live packets and batches are valid by the schemas", not bad, bad[:3])
    ok, out = lib.emsctl_validate([m.text for m in cloud.msgs], env.tmp)
    tap.ok("emsctl validate accepts every message (batches included)", ok is not False, out[-400:])
    s = await edge.status()
    tap.ok("after catching up the buffer holds at most the packets awaiting their ack",
           s and s["buffer"]["pending"] <= 2, s and s["buffer"])
    rc = await edge.stop()
    tap.eq("edge-a exits cleanly", rc, 0)
    await cloud.stop()


def lib_ts(s):
    import calendar
    return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + int((s[20:-1] + "000")[:3])


async def bounded_backfill(tap, env):
    """A large backlog (TEST-ONLY tick_ms = 20) drained in bounded batches."""
    port = lib.free_port()
    cloud = env.cloud(port=port)
    edge = await env.edge("edge-b").start(
        f"wss://localhost:{port}", env.token_file, ca=env.ca, buffer=os.path.join(env.tmp, "buffer-b"),
        extra=["--set", "tick_ms=20", "--set", "backfill_batch=50", "--set", "backfill_inflight=2",
               "--set", "backfill_interval_ms=100", "--set", "ack_timeout_s=3",
               "--set", "reconnect_max_s=1"])
    await asyncio.sleep(4)  # no cloud: ~200 packets pile up
    s = await edge.status()
    pending = s["buffer"]["pending"] if s else 0
    tap.ok("with no cloud the packets pile up in the buffer", pending >= 100, s and s["buffer"])
    tap.ok("tick_ms is logged as a test-only setting", edge.log(r"tick_ms = 20: a TEST-ONLY"), edge.tail(3))

    cloud.auto_ack = False
    await cloud.start()
    await cloud.wait(lambda: cloud.conns >= 1, 5)
    await asyncio.sleep(1.5)
    batches = cloud.of("telemetry-batch")
    live = cloud.of("telemetry")
    tap.eq("without acks exactly backfill_inflight (2) batches are in flight", len(batches), 2)
    tap.ok("of at most backfill_batch (50) packets each, oldest first",
           all(len(b.obj["packets"]) == 50 for b in batches)
           and [p["seq"] for b in batches for p in b.obj["packets"]] == list(range(1, 101)),
           [(b.obj["packets"][0]["seq"], len(b.obj["packets"])) for b in batches])
    tap.ok("live packets keep flowing meanwhile", len(live) >= 20, len(live))
    gaps = [b.t - a.t for a, b in zip(live, live[1:])]
    tap.ok("no live packet waits behind the backlog (largest gap < 1 s at 20 ms ticks)",
           gaps and max(gaps) < 1.0, max(gaps) if gaps else None)

    # The cloud acks what it has; from now on it acks as it goes.
    cloud.auto_ack = True
    await cloud.send({"type": "ack", "ranges": lib.ranges(all_seqs(cloud))})
    t1 = time.monotonic()
    caught = await edge.wait_log(r"backfill: caught up", 20, t1)
    tap.ok("with acks the backlog drains to the end", caught, edge.tail(5))
    times = [b.t for b in cloud.of("telemetry-batch")]
    spacing = [b - a for a, b in zip(times, times[1:])]
    # Arrival times carry the receiver's jitter; the mean spacing does not.
    tap.ok("batches are paced by backfill_interval_ms (100 ms on average)",
           spacing and sum(spacing) / len(spacing) >= 0.095, [round(x, 3) for x in spacing[:10]])
    await asyncio.sleep(0.5)
    seqs = all_seqs(cloud)
    tap.ok(f"all {max(seqs)} seqs arrived, no gap", no_gaps(seqs),
           sorted(set(range(1, max(seqs) + 1)) - set(seqs))[:20])

    # Ack timeout and nack: the cloud goes quiet about the next backlog.
    await cloud.stop()
    await asyncio.sleep(1.5)
    cloud.auto_ack = False
    n_batches = len(cloud.of("telemetry-batch"))
    t2 = time.monotonic()
    await cloud.start()
    first = await cloud.wait(lambda: len(cloud.of("telemetry-batch")) > n_batches and
                             cloud.of("telemetry-batch")[n_batches], 5)
    nack_seq = first.obj["packets"][0]["seq"] if first else None
    if nack_seq is not None:
        await cloud.send({"type": "nack", "seq": nack_seq, "path": "battery.soc", "reason": "test refusal"})
    nacked = await edge.wait_log(rf"refused packet seq {nack_seq} for good .*dropped from the buffer", 3, t2)
    tap.ok("a nack is logged and drops the packet from the buffer", nacked, edge.tail(4))
    resend = await edge.wait_log(r"backfill: no ack for seq \d+ after 3000 ms", 6, t2)
    tap.ok("an overdue ack (ack_timeout_s = 3) makes the edge send again, logged", resend, edge.tail(4))
    again = await cloud.wait(lambda: [p for m in cloud.of("telemetry-batch", since=t2 + 3)
                                      for p in m.obj["packets"] if p["seq"] == first.obj["packets"][1]["seq"]], 4)
    tap.ok("the unacknowledged packets arrive again (the cloud deduplicates by seq)", again, "")
    resent_nacked = [p for m in cloud.of("telemetry-batch", since=t2 + 3) for p in m.obj["packets"]
                     if p["seq"] == nack_seq]
    tap.ok("the nacked packet is not sent again", not resent_nacked, nack_seq)
    s = await edge.status()
    tap.ok("/status counts the nack and the resend",
           s and s["buffer"]["nacked_total"] == 1 and s["backfill"]["restarts"] >= 1,
           s and (s["buffer"], s["backfill"]))
    cloud.auto_ack = True
    await cloud.send({"type": "ack", "ranges": lib.ranges(all_seqs(cloud))})
    await edge.wait_log(r"backfill: caught up", 15, t2)
    await asyncio.sleep(0.5)
    seqs = set(all_seqs(cloud)) | {nack_seq}
    tap.ok("still no gap in the seqs (the nacked one was delivered once)", no_gaps(seqs),
           sorted(set(range(1, max(seqs) + 1)) - seqs)[:20])
    rc = await edge.stop()
    tap.eq("edge-b exits cleanly", rc, 0)
    await cloud.stop()


async def kill9(tap, env):
    cloud = await env.cloud().start()
    cloud.auto_ack = False
    buf = os.path.join(env.tmp, "buffer-k9")
    extra = ["--set", "tick_ms=100"]
    edge = await env.edge("edge-k9").start(cloud.url(), env.token_file, ca=env.ca, buffer=buf, extra=extra)
    await lib.next_packets(cloud, 20, 10)
    edge.proc.kill()  # SIGKILL: no flush, no close
    await edge.wait_exit(5)
    first_run = all_seqs(cloud)
    top = max(first_run)
    t0 = time.monotonic()
    cloud.auto_ack = True
    edge2 = await env.edge("edge-k9b").start(cloud.url(), env.token_file, ca=env.ca, buffer=buf, extra=extra)
    live = await lib.next_packets(cloud, 5, 10)
    tap.ok(f"after kill -9 the next seq continues above {top} (no reuse)",
           live and min(p["seq"] for p in live) > top, [p["seq"] for p in live])
    tap.ok("and continues exactly at the next number (same boot, no gap)",
           live and min(p["seq"] for p in live) == top + 1, [p["seq"] for p in live])
    await edge2.wait_log(r"backfill: caught up", 10, t0)
    back = {p["seq"] for _, p in cloud.telemetry(t0) if p.get("backfill")}
    tap.ok("the packets the cloud never acked before the kill are backfilled",
           set(first_run) <= back | {p["seq"] for p in live}, sorted(set(first_run) - back)[:10])
    seqs = all_seqs(cloud)
    tap.ok("no gap across the kill", no_gaps(seqs), sorted(set(range(1, max(seqs) + 1)) - set(seqs))[:10])
    # A second daemon on the same buffer (two controllers for one battery)
    # is refused at start.
    edge3 = await env.edge("edge-k9c").start(cloud.url(), env.token_file, ca=env.ca, buffer=buf,
                                             status=False)
    rc3 = await edge3.wait_exit(15)
    tap.ok("a second ems-edge on the same buffer exits 1, saying why",
           rc3 == 1 and edge3.log(r"cannot open .*another ems-edge uses it"), f"rc {rc3}\n{edge3.tail(4)}")
    rc = await edge2.stop()
    tap.eq("the restarted edge exits cleanly", rc, 0)
    await cloud.stop()


async def main(tap):
    env = lib.Env(tap, "60-edge-buffer")
    try:
        await acks_and_outage(tap, env)
        await bounded_backfill(tap, env)
        await kill9(tap, env)
        for e in env.edges:
            tap.ok(f"{e.name}: no sanitizer report",
                   not e.log(r"ERROR: (Address|Leak)Sanitizer|runtime error"), e.tail(10))
    finally:
        if tap.failed:
            for e in env.edges:
                tap.note(f"--- {e.name}\n" + e.tail(15))
        await env.close()


lib.run(main)
