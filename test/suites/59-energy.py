#!/usr/bin/python3
# 59-energy.py: energy per day and month in the cloud (issue 16, item 2;
# docs/energy.md), on the real binaries: PostgreSQL + ems-dbwriter +
# ems-gateway with energy_time_zone = Europe/Berlin, devices sending
# telemetry with the `energy` counters over their WebSocket.
#
# The data: hourly samples of device en_a from Friday 2026-10-23 22:00 to
# Monday 2026-10-26 23:00 Berlin time, across the end of summer time on
# Sunday 25 October (that day has 25 hours), with
#   - a gap inside Monday (04:00..09:00 not sent): the counter covers it;
#   - a counter reset on Monday 14:50 (a replaced edge: a new `since`, the
#     counters start again from 0), inside an hour, so that hour is read
#     from its minutes;
#   - a gap across Saturday midnight (Sat 21:00..Sun 04:00) that is sent
#     later as backfill and moves energy back into Saturday;
#   - a packet without `energy` (stored with NULL counters, ignored);
#   - two samples around the end of October (the last one is November in
#     Berlin, still October in UTC) for the month buckets.
# Device en_b adds a little on Sunday (the fleet total); en_old is an edge
# that sends no counters at all.
#
# Every expected value is computed by hand from the samples (`hand` below:
# differences in time order, a new series counted from 0, the energy of a
# gap in the bucket of the sample that ends it) and the main ones are also
# written out as literal numbers.
import asyncio
import csv
import importlib.util
import io
import json
import os
import subprocess
import time
from collections import defaultdict
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

_spec = importlib.util.spec_from_file_location(
    "gw", os.path.join(os.path.dirname(os.path.abspath(__file__)), "50-gateway-lib.py"))
gw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gw)

tap = gw.Tap()
ZONE = "Europe/Berlin"
TZ = ZoneInfo(ZONE)
UTC = timezone.utc
HOUR = 3600 * 1000


def ms(dt):
    return int(dt.timestamp() * 1000)


def local(y, mo, d, h, mi=0):
    return ms(datetime(y, mo, d, h, mi, tzinfo=TZ))


# ---------------------------------------------------------------- the data

class Sample:
    def __init__(self, dev, ts, since, mwh, send=True):
        self.dev, self.ts, self.since, self.mwh, self.send = dev, ts, since, mwh, send
        self.seq = None

    def packet(self):
        p = gw.packet(self.dev, self.seq, self.ts)
        if self.mwh is not None:
            p["energy"] = {"battery_charged_wh": self.mwh[0] / 1000,
                           "battery_discharged_wh": self.mwh[1] / 1000,
                           "grid_import_wh": self.mwh[2] / 1000,
                           "grid_export_wh": self.mwh[3] / 1000,
                           "since": gw.iso(self.since)}
        return p


def series_a():
    """en_a: (samples, gap across Saturday midnight, sent later)."""
    start = local(2026, 10, 23, 22)
    end = local(2026, 10, 26, 23)
    reset = local(2026, 10, 26, 14, 50)
    since = local(2026, 1, 1, 0)
    gap_day = (local(2026, 10, 26, 4), local(2026, 10, 26, 10))   # never sent
    gap_night = (local(2026, 10, 24, 21), local(2026, 10, 25, 5))  # sent later
    out, late = [], []
    v = [0, 0, 0, 0]
    # A replaced edge: its first sample at 14:50 in a series that began
    # five minutes before, so the hour 14:00..15:00 holds two series.
    reset_v = [5000, 0, 1000, 0]
    t = start
    while t <= end:
        h = datetime.fromtimestamp(t / 1000, TZ).hour
        # mWh per hour: 100 Wh charged; 40 Wh discharged in the evening;
        # 30.333 Wh bought every other UTC hour; sold by the local hour.
        inc = [100000, 40000 if 18 <= h <= 21 else 0,
               30333 if (t // HOUR) % 2 == 0 else 0, 7001 * (h % 3)]
        v = [a + b for a, b in zip(v, inc)]
        if t == reset + 10 * 60000:
            # The new series: 10 minutes after its first sample at 14:50.
            v = [a + b for a, b in zip(reset_v, inc)]
        s = Sample("en_a", t, since, list(v))
        if gap_day[0] <= t < gap_day[1]:
            pass
        elif gap_night[0] <= t < gap_night[1]:
            late.append(s)
        else:
            out.append(s)
        if t + HOUR > reset and t < reset:
            since = reset - 5 * 60000
            out.append(Sample("en_a", reset, since, list(reset_v)))
        t += HOUR
    # The end of October: 22:00 on the 31st (still October everywhere),
    # then 00:30 on 1 November in Berlin (23:30 UTC, October in UTC).
    for t in (ms(datetime(2026, 10, 31, 21, 0, tzinfo=UTC)),
              ms(datetime(2026, 10, 31, 23, 30, tzinfo=UTC))):
        v = [v[0] + (500000 if t % HOUR == 0 else 100000), v[1], v[2] + 1000, v[3]]
        out.append(Sample("en_a", t, since, list(v)))
    # A packet without counters in the middle of Monday: ignored.
    out.append(Sample("en_a", local(2026, 10, 26, 12, 30), None, None))
    return out, late


def series_b():
    since = local(2026, 10, 1, 0)
    return [Sample("en_b", local(2026, 10, 25, h), since, [5000000 + 10000 * h, 0, 0, 0])
            for h in range(10, 15)]


def series_old():
    return [Sample("en_old", local(2026, 10, 25, h), None, None) for h in range(8, 12)]


def bucket_of(ts, unit, tz=TZ):
    d = datetime.fromtimestamp(ts / 1000, tz)
    return d.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m")


def hand(samples, unit, tz=TZ):
    """Energy (mWh) and sample count per local bucket, by hand."""
    e = defaultdict(lambda: [0, 0, 0, 0])
    n = defaultdict(int)
    prev = None
    for s in sorted((s for s in samples if s.mwh is not None), key=lambda s: s.ts):
        b = bucket_of(s.ts, unit, tz)
        n[b] += 1
        e[b]
        if prev is not None:
            for k in range(4):
                same = prev.since == s.since and s.mwh[k] >= prev.mwh[k]
                e[b][k] += s.mwh[k] - prev.mwh[k] if same else s.mwh[k]
        prev = s
    return e, n


KEYS = ["battery_charged_wh", "battery_discharged_wh", "grid_import_wh", "grid_export_wh"]


def mwh_of(bucket):
    return [None if bucket[k] is None else round(bucket[k] * 1000) for k in KEYS]


# ---------------------------------------------------------------- plumbing

async def send(env, dev, tok, samples, seq0):
    """Sends the samples on the device's socket; waits for every ack."""
    ws = await env.device(dev, tok)
    await asyncio.wait_for(ws.recv(), 5)  # welcome
    seqs = []
    for i, s in enumerate(samples):
        s.seq = seq0 + i
        p = s.packet()
        if s.ts < time.time() * 1000 - 86400 * 1000:
            p["backfill"] = True
        await ws.send(json.dumps(p))
        seqs.append(s.seq)
    await gw.acked(ws, seqs, timeout=30)
    await ws.close()


def get(env, path, cookie):
    st, h, b = env.http("GET", path, cookie=cookie, timeout=30)
    try:
        return st, h, json.loads(b) if h.get("content-type", "").startswith("application/json") else b
    except ValueError:
        return st, h, b


def settled(env, cookie, path, cond, timeout=30):
    """The answer once cond(answer) holds (the rollup step recomputes the
    late minutes every 200 ms), or the last answer after the timeout."""
    end = time.time() + timeout
    while True:
        st, h, a = get(env, path, cookie)
        if st == 200 and cond(a):
            return st, a
        if time.time() > end:
            return st, a
        time.sleep(0.3)


def by_local(answer):
    return {b["local"]: b for b in answer.get("buckets", [])} if isinstance(answer, dict) else {}


# ---------------------------------------------------------------- checks

def check_days(env, cookie, samples, phase):
    path = "/api/devices/en_a/energy?from=2026-10-24&to=2026-10-27&bucket=day"
    want_e, want_n = hand(samples, "day")
    lit = {"before": {"2026-10-24": 2100, "2026-10-25": 2800, "2026-10-26": 2405},
           "after": {"2026-10-24": 2400, "2026-10-25": 2500, "2026-10-26": 2405}}[phase]
    st, a = settled(env, cookie, path, lambda a: {d: b["battery_charged_wh"]
                                                  for d, b in by_local(a).items()} == lit)
    got = by_local(a)
    tap.eq(f"{phase} backfill: GET /api/devices/en_a/energy?bucket=day answers 200", st, 200)
    tap.eq(f"{phase} backfill: three Berlin days, in order",
           [b["local"] for b in a.get("buckets", [])] if isinstance(a, dict) else a,
           ["2026-10-24", "2026-10-25", "2026-10-26"])
    tap.eq(f"{phase} backfill: charged Wh per day (literal: 25-hour Sunday, reset, gaps)",
           {d: b["battery_charged_wh"] for d, b in got.items()}, lit)
    tap.eq(f"{phase} backfill: all four counters per day equal the hand computation",
           {d: mwh_of(b) for d, b in got.items()},
           {d: want_e[d] for d in ["2026-10-24", "2026-10-25", "2026-10-26"]})
    tap.eq(f"{phase} backfill: samples per day (what the day is built from)",
           {d: b["samples"] for d, b in got.items()},
           {d: want_n[d] for d in ["2026-10-24", "2026-10-25", "2026-10-26"]})
    return got


def check_shape(env, cookie, got):
    sun = got.get("2026-10-25", {})
    tap.eq("the DST day is 25 hours long, the others 24 (length_s)",
           [got.get(d, {}).get("length_s") for d in ["2026-10-24", "2026-10-25", "2026-10-26"]],
           [86400, 90000, 86400])
    tap.eq("a bucket starts at local midnight (start, end in UTC)",
           (sun.get("start"), sun.get("end")),
           ("2026-10-24T22:00:00.000Z", "2026-10-25T23:00:00.000Z"))
    mon = got.get("2026-10-26", {})
    tap.eq("the gap on Monday shows as missing samples and covered time (19 of 25 samples)",
           (mon.get("samples"), mon.get("covered_s")), (19, 19 * 60))
    tap.ok("a device answer has no fleet member 'devices'", "devices" not in mon, str(mon))


def check_months(env, cookie, samples):
    st, h, a = get(env, "/api/devices/en_a/energy?from=2026-10&to=2026-12&bucket=month", cookie)
    got = by_local(a)
    want_e, want_n = hand(samples, "month")
    tap.eq("month buckets: 200, October and November", (st, sorted(got)), (200, ["2026-10", "2026-11"]))
    tap.eq("month buckets: charged Wh (00:30 on 1 November Berlin is November)",
           [got.get(m, {}).get("battery_charged_wh") for m in ["2026-10", "2026-11"]], [7905, 100])
    tap.eq("month buckets: all four counters equal the hand computation",
           {m: mwh_of(b) for m, b in got.items()}, {m: want_e[m] for m in ["2026-10", "2026-11"]})
    e_utc, _ = hand(samples, "month", UTC)
    tap.ok("... and differ from UTC months (the zone is applied)",
           mwh_of(got.get("2026-11", {k: None for k in KEYS})) != e_utc.get("2026-11", [0, 0, 0, 0]),
           str(e_utc))
    tap.eq("month lengths: 31 days + 1 hour (DST) and 30 days",
           [got.get(m, {}).get("length_s") for m in ["2026-10", "2026-11"]],
           [31 * 86400 + 3600, 30 * 86400])


def check_fleet(env, cookie, a_samples, b_samples):
    st, h, a = get(env, "/api/energy?from=2026-10-25&to=2026-10-26&bucket=day", cookie)
    got = by_local(a)
    ea, _ = hand(a_samples, "day")
    eb, _ = hand(b_samples, "day")
    sun = got.get("2026-10-25", {})
    tap.eq("fleet total: 200, one day", (st, sorted(got)), (200, ["2026-10-25"]))
    tap.eq("fleet total: charged = en_a 2500 + en_b 40 (its first sample adds nothing)",
           sun.get("battery_charged_wh"), 2540)
    tap.eq("fleet total: all counters = the sum of the devices' hand computations",
           mwh_of(sun) if sun else None, [x + y for x, y in zip(ea["2026-10-25"], eb["2026-10-25"])])
    tap.eq("fleet total: devices with counters that day (en_old has none)", sun.get("devices"), 2)


def check_old(env, cookie):
    st, h, a = get(env, "/api/devices/en_old/energy?from=2026-10-25&to=2026-10-26", cookie)
    b = by_local(a).get("2026-10-25", {})
    tap.eq("an edge without counters: the day is answered with 0 samples and null energy",
           (st, b.get("samples"), [b.get(k, "absent") for k in KEYS]), (200, 0, [None] * 4))
    rows = env.psql("SELECT count(*), count(energy_since), count(energy_charged_mwh)"
                    " FROM telemetry WHERE device_id = 'en_old'")
    tap.eq("... its packets are stored with NULL counters", rows, [["4", "0", "0"]])
    rows = env.psql("SELECT count(*) FILTER (WHERE energy_since IS NULL),"
                    " count(*) FILTER (WHERE energy_charged_mwh = 2300000)"
                    " FROM telemetry WHERE device_id = 'en_a'")
    tap.eq("en_a: the packet without energy stored NULL, counters stored in exact mWh", rows,
           [["1", "1"]])


def check_csv(env, cookie, got_json):
    st, h, b = env.http("GET", "/api/devices/en_a/energy?from=2026-10-24&to=2026-10-27&format=csv",
                        cookie=cookie)
    tap.eq("CSV: 200 text/csv", (st, h.get("content-type", "").split(";")[0]), (200, "text/csv"))
    rows = list(csv.reader(io.StringIO(b.decode())))
    tap.eq("CSV: the header", rows[0] if rows else None,
           ["local", "start", "end", "length_s", "samples", "covered_s"] + KEYS)
    body = {r[0]: r for r in rows[1:]}
    tap.eq("CSV: one row per day with the JSON's values",
           {d: [float(x) for x in r[6:]] for d, r in body.items()},
           {d: [float(b[k]) for k in KEYS] for d, b in got_json.items()})
    st, h, b = env.http("GET", "/api/energy?from=2026-10-25&to=2026-10-26&format=csv", cookie=cookie)
    rows = list(csv.reader(io.StringIO(b.decode())))
    tap.ok("CSV fleet: has the devices column and one day",
           st == 200 and rows and "devices" in rows[0] and len(rows) == 2, b[:300])
    st, h, b = env.http("GET", "/api/devices/en_old/energy?from=2026-10-25&to=2026-10-26&format=csv",
                        cookie=cookie)
    tap.ok("CSV: null energy is an empty field",
           st == 200 and b.decode().splitlines()[1].endswith(",0,0,,,,"), b[:300])


def check_errors_and_auth(env, cookie, viewer):
    for path, why in [("/api/devices/en_a/energy?bucket=week", "bucket"),
                      ("/api/devices/en_a/energy?from=2026-13-01&to=2026-12-31", "bad date"),
                      ("/api/devices/en_a/energy?from=2026-10-27&to=2026-10-24", "to before from"),
                      ("/api/devices/en_a/energy?from=2026-10-24&to=2026-11&bucket=month", "a day for month buckets"),
                      ("/api/devices/en_a/energy?from=2000-01-01&to=2026-01-01", "too many buckets"),
                      ("/api/devices/en_a/energy?format=xml", "format")]:
        st, h, b = env.http("GET", path, cookie=cookie)
        tap.eq(f"400 for a bad request ({why})", st, 400)
    for path in ["/api/devices/en_a/energy", "/api/energy"]:
        st, h, b = env.http("GET", path)
        tap.eq(f"{path} without a session: 401", st, 401)
        st, h, b = env.http("GET", path, cookie="ems_session=forged.value")
        tap.eq(f"{path} with a forged cookie: 401", st, 401)
        st, h, b = env.http("GET", path + "?from=2026-10-25&to=2026-10-26", cookie=viewer)
        tap.eq(f"{path} as a viewer (like history): 200", st, 200)
        st, h, b = env.http("POST", path, body={}, cookie=cookie, headers={"Origin": env.origin()})
        tap.eq(f"{path}: POST is 405", st, 405)
    st, h, a = get(env, "/api/energy", cookie)
    tap.ok("defaults: the last 30 days by day in the configured zone",
           st == 200 and a.get("bucket") == "day" and a.get("time_zone") == ZONE
           and 30 <= len(a.get("buckets", [])) <= 31, str(a)[:300])


def check_half_hour_zone(env, cookie, samples):
    """The same data in Asia/Kolkata (UTC+5:30): local midnight cuts UTC
    hours, so the query reads minutes around each midnight, hours between."""
    kol = ZoneInfo("Asia/Kolkata")
    st, h, a = get(env, "/api/devices/en_a/energy?from=2026-10-24&to=2026-10-27", cookie)
    got = by_local(a)
    want_e, want_n = hand(samples, "day", kol)
    days = ["2026-10-24", "2026-10-25", "2026-10-26"]
    tap.eq("Asia/Kolkata: 200, the zone in the answer, days start at 18:30 UTC",
           (st, a.get("time_zone") if isinstance(a, dict) else a, got.get("2026-10-25", {}).get("start")),
           (200, "Asia/Kolkata", "2026-10-24T18:30:00.000Z"))
    tap.eq("Asia/Kolkata: all four counters per day equal the hand computation",
           {d: mwh_of(b) for d, b in got.items()}, {d: want_e[d] for d in days})
    tap.eq("Asia/Kolkata: samples per day", {d: b["samples"] for d, b in got.items()},
           {d: want_n[d] for d in days})


def check_bad_zone():
    r = subprocess.run([os.path.join(gw.BUILD, "ems-gateway"), "--tls=off",
                        "--energy_time_zone=../../etc/passwd"], capture_output=True, text=True,
                       timeout=20)
    tap.ok("the gateway refuses an energy_time_zone that is not a zone name",
           r.returncode != 0 and "energy_time_zone" in r.stderr, r.stderr[-300:])


async def main():
    env = gw.Env(tap, tls=False)
    try:
        check_bad_zone()
        env.start_pg()
        tok = {d: env.add_device(d) for d in ("en_a", "en_b", "en_old")}
        env.add_user("ada", "operator", "ada-password-1")
        env.add_user("vic", "viewer", "vic-password-1")
        env.start_dbwriter("--rollup-interval-ms", "200")
        env.start_gateway(rate_burst=100000, rate_per_s=100000, telemetry_max_age_days=3650,
                          energy_time_zone=ZONE)
        cookie = env.login("ada", "ada-password-1")
        viewer = env.login("vic", "vic-password-1")

        a, late = series_a()
        b = series_b()
        await send(env, "en_a", tok["en_a"], a, 1)
        await send(env, "en_b", tok["en_b"], b, 1)
        await send(env, "en_old", tok["en_old"], series_old(), 1)
        check_days(env, cookie, a, "before")
        # The backfill: older packets arrive last (their seq is older too).
        await send(env, "en_a", tok["en_a"], late, 10000)
        got = check_days(env, cookie, a + late, "after")
        check_shape(env, cookie, got)
        check_months(env, cookie, a + late)
        check_fleet(env, cookie, a + late, b)
        check_old(env, cookie)
        check_csv(env, cookie, got)
        check_errors_and_auth(env, cookie, viewer)
        env.stop_gateway()
        env.start_gateway(rate_burst=100000, rate_per_s=100000, telemetry_max_age_days=3650,
                          energy_time_zone="Asia/Kolkata")
        check_half_hour_zone(env, cookie, a + late)
    except Exception as e:
        import traceback
        tap.ok("suite ran to the end", False, f"{e!r}")
        tap.note(traceback.format_exc())
    finally:
        rc = env.close()
        tap.eq("gateway exits 0 after SIGTERM", rc, 0)


asyncio.run(main())
tap.done()
