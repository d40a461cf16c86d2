#!/usr/bin/env bash
# scripts/bench-ladder.sh: the fleet benchmark at several sizes, one table.
#
# Runs scripts/bench-fleet.sh once per step (each step starts and stops its
# own PostgreSQL, DB writer, gateways, generators and dashboards), then
# prints one markdown table of all steps, the machine it ran on and what
# else used the CPU meanwhile, and appends it to --out. The largest step
# runs with several gateway processes sharing the port (SO_REUSEPORT)
# joined over NATS (--reuseport --bus), the others with one gateway
# (or as many as the fd limit requires, on separate ports).
#
# usage: scripts/bench-ladder.sh [--steps 2000,10000,20000,50000]
#            [--top-gateways G] [--warmup S] [--window S] [--drain S]
#            [--rate R] [--per-proc M] [--nice N] [--build DIR]
#            [--out FILE] [--results FILE] [--fleet-args "ARGS"] [--top-args "ARGS"]
#   --steps LIST      device counts, ascending (default 2000,10000,20000,50000)
#   --top-gateways G  gateways of the largest step (default: 3, or more if
#                     the fd limit needs them: ~15,000 connections each)
#   --warmup S        per step (5)
#   --window S        measurement window per step (30)
#   --drain S         longest wait for the last acks per step (60)
#   --rate R          new connections per second (1000)
#   --per-proc M      devices per load-generator process (10000)
#   --nice N          passed to bench-fleet.sh (e.g. -10 on a shared machine)
#   --build DIR       binaries (default build: `make bench` builds them; or
#                     make BUILD=DIR OPT=-O2 all DIR/bench/bench_fleet)
#   --out FILE        also append the markdown to FILE (default: stdout only)
#   --results FILE    append each step's JSON line (default: a temporary
#                     file, printed path)
#   --fleet-args ARGS more flags for every bench-fleet.sh step
#   --top-args ARGS   more flags for the largest step only, e.g.
#                     "--dashboards sub,fleet --gateway-args --ack_delay_ms=3000"
#
# Every step must commit and acknowledge every packet; the table says so
# per step ("all committed": sent = acked = rows in PostgreSQL, no nack,
# no duplicate). The ladder does not stop at a failed step.
set -u
cd "$(dirname "$0")/.."

STEPS=2000,10000,20000,50000 TOPGW=0 WARMUP=5 WINDOW=30 DRAIN=60 RATE=1000 PER_PROC=10000
NICE="" BUILD=build OUT="" RESULTS="" FLEET_ARGS="" TOP_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
    --steps) STEPS=$2; shift ;;
    --top-gateways) TOPGW=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --window) WINDOW=$2; shift ;;
    --drain) DRAIN=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --per-proc) PER_PROC=$2; shift ;;
    --nice) NICE=$2; shift ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --fleet-args) FLEET_ARGS=$2; shift ;;
    --top-args) read -r -a TOP_ARGS <<<"$2"; shift ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-ladder: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
command -v nats-server >/dev/null || { echo "bench-ladder: the largest step needs nats-server (--bus)" >&2; exit 2; }
[ -n "$RESULTS" ] || RESULTS=$(mktemp /tmp/ems-ladder.XXXXXX.jsonl)
: >>"$RESULTS"
MARK=$(wc -l <"$RESULTS")
IFS=, read -r -a LIST <<<"$STEPS"
TOP=${LIST[$((${#LIST[@]} - 1))]}
log() { echo "bench-ladder: $*" >&2; }

for n in "${LIST[@]}"; do
    args=(--devices "$n" --build "$BUILD" --warmup "$WARMUP" --window "$WINDOW" --drain "$DRAIN"
        --rate "$RATE" --per-proc "$PER_PROC" --results "$RESULTS")
    [ -n "$NICE" ] && args+=(--nice "$NICE")
    if [ "$n" = "$TOP" ]; then
        g=$TOPGW
        [ "$g" -gt 0 ] || g=3
        need=$(((n + 13499) / 13500))
        [ "$g" -ge "$need" ] || g=$need
        args+=(--gateways "$g" --reuseport --bus "${TOP_ARGS[@]}")
    fi
    log "step $n: scripts/bench-fleet.sh ${args[*]} $FLEET_ARGS"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    scripts/bench-fleet.sh "${args[@]}" $FLEET_ARGS >"$RESULTS.step$n.log" 2>&1
    rc=$?
    log "step $n: exit $rc after $(($(date +%s) - t0)) s (log $RESULTS.step$n.log)"
    grep -q 'every packet committed' "$RESULTS.step$n.log" ||
        { log "step $n produced no result:"; tail -n 15 "$RESULTS.step$n.log" >&2; }
done

/usr/bin/python3 - "$RESULTS" "$MARK" "$OUT" <<'EOF'
import json, os, platform, subprocess, sys, time
path, mark, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(path).read().splitlines()[mark:] if l.strip()]

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")

def model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"

mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
try:
    pg = subprocess.run(["pg_config", "--version"], capture_output=True, text=True).stdout.strip()
except OSError:
    pg = "?"
lines = []
lines.append(f"Ladder of {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} CPUs ({model()}), "
             f"{mem_gib:.0f} GiB RAM, Linux {platform.release()}, {pg}.")
lines.append("")
lines.append("| devices | gw | bus | pkts/s | all committed | ack p50 / p99 ms | fan-out `*` p99 ms | fleet view p99 ms | fan-out 100 p99 ms "
             "| CPU ms per 1,000 packets: gw / dbw / pg / nats / gen / dash | gw RSS KiB per connection: idle / under load | gen RSS KiB per device | other CPU % |")
lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    ok = (r["db_rows"] == r["acked"] == r["sent"] and r["db_duplicates"] == 0 and r["nacked"] == 0
          and r["unsettled"] == 0)
    what = "yes" if ok else f"**no** (sent {r['sent']}, acked {r['acked']}, rows {r['db_rows']}, nacked {r['nacked']})"
    if r.get("dash_closed_early"):
        what += "; dashboard closed: " + ", ".join(r["dash_closed_early"])
    c = r.get("cpu_ms_per_1k_pkts", {})
    bus = "yes" if " --bus" in r["cmd"] else "no"
    cpu = " / ".join("-" if (k == "nats" and bus == "no") else fmt(c.get(k))
                     for k in ("gw", "dbw", "pg", "nats", "gen", "dash"))
    a = r["ack_latency"]
    lines.append(f"| {r['devices']:,} | {r['gateways']} | {bus} | {r['rate_window_per_s']:,.0f} | {what} | "
                 f"{fmt(a['p50_ms'])} / {fmt(a['p99_ms'])} | {fmt(r['fanout_all']['p99_ms'])} | "
                 f"{fmt(r['fleet_latest']['p99_ms'])} | {fmt(r['fanout_sub']['p99_ms'])} | {cpu} | "
                 f"{r['idle_rss_kib_per_conn']['gw']} / {r.get('gw_rss_kib_per_device', '-')} | {r.get('gen_rss_kib_per_device', '-')} | "
                 f"{r['others_pct']} |")
lines.append("")
lines.append("Commands (one per step):")
for r in rows:
    lines.append(f"- `{r['cmd']}`")
lines.append("")
lines.append("CPU per 1,000 packets is each process group's CPU time during the window divided by the "
             "packets sent in it (on loopback each side's figure includes kernel work for the other side); "
             "\"other CPU\" is what everything else on the machine used meanwhile, in % of one core. "
             "Gateway RSS per connection: \"idle\" is the growth over the ramp divided by the devices; "
             "\"under load\" the gateways' total RSS in the window divided by the devices (fixed "
             "memory dominates it at small sizes). The fleet view's latency includes its coalescing "
             "interval (fleet_interval_ms).")
text = "\n".join(lines) + "\n"
print(text)
if out:
    with open(out, "a") as f:
        f.write(text + "\n")
print(f"(JSON lines: {path})", file=sys.stderr)
EOF
