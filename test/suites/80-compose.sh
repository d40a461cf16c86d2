#!/usr/bin/env bash
# 80-compose.sh: the docker deployment (docker/), checked without a Docker
# engine (there is none on the build machines):
#   - docker-compose validates docker/docker-compose.yml, with and without
#     the optional profiles;
#   - the resolved file keeps the promises docs/deploy-cloud.md makes
#     (restart policies, health checks, pinned images, secrets from files,
#     the shared socket volume, nothing but the gateway published);
#   - every package the Dockerfiles install exists in Debian 12, and the
#     runtime images carry a package for every shared library the binaries
#     need (read from the binaries this build made);
#   - every COPY source of the Dockerfiles is in the build context;
#   - docker/init-secrets.sh makes a CA and a certificate the gateway and the
#     edges can use, and keeps existing files on a second run;
#   - docker/db-init/10-ems-roles.sh, run against a real PostgreSQL 15, gives
#     the roles and the privileges it promises, and their passwords work
#     through docker/ems-entrypoint.sh.
# Prints TAP lines "ok - NAME" / "not ok - NAME: why".
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${EMS_BUILD:-$ROOT/build/san}
cd "$ROOT" || exit 1
PY=/usr/bin/python3
COMPOSE_FILE=docker/docker-compose.yml

. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status

TMP=$(mktemp -d /tmp/ems-compose-test.XXXXXX)
cleanup() {
    for p in ${gw_pid:-} ${dbw_pid:-}; do kill -KILL "$p" 2>/dev/null; done
    [ -n "${EMS_PG_DIR:-}" ] && ems_pg_stop
    rm -rf "$TMP"
}
trap cleanup EXIT

if ! command -v docker-compose >/dev/null 2>&1; then
    notok "docker-compose present" "not installed (scripts/deps.sh installs it)"
    exit 1
fi

# ---------------------------------------------------------------- secrets
# Made first: the compose checks below resolve the secret paths to them.
export EMS_SECRETS_DIR=$TMP/secrets
if out=$(docker/init-secrets.sh ems.example.com 192.0.2.10 2>&1); then
    ok "init-secrets.sh makes the secrets"
else
    notok "init-secrets.sh makes the secrets" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi
S=$EMS_SECRETS_DIR
expected="pg_superuser_password pg_ems_password pg_reader_password grafana_admin_password session_key ca.crt ca.key tls.crt tls.key"
missing=""
for f in $expected; do [ -s "$S/$f" ] || missing="$missing $f"; done
if [ -z "$missing" ]; then ok "init-secrets.sh: every secret file is there"; else notok "init-secrets.sh: every secret file is there" "missing:$missing"; fi

if openssl verify -CAfile "$S/ca.crt" "$S/tls.crt" >/dev/null 2>&1; then
    ok "init-secrets.sh: tls.crt chains to ca.crt"
else
    notok "init-secrets.sh: tls.crt chains to ca.crt" "$(openssl verify -CAfile "$S/ca.crt" "$S/tls.crt" 2>&1 | tail -n 1)"
fi
san=$(openssl x509 -in "$S/tls.crt" -noout -ext subjectAltName 2>/dev/null | tail -n 1)
case "$san" in
    *DNS:gateway*DNS:ems.example.com*"IP Address:192.0.2.10"*)
        ok "init-secrets.sh: certificate names gateway, the public name and the address" ;;
    *) notok "init-secrets.sh: certificate names gateway, the public name and the address" "SAN is '$san'" ;;
esac
# The key belongs to the certificate (compare the public keys).
if [ "$(openssl pkey -in "$S/tls.key" -pubout 2>/dev/null)" = "$(openssl x509 -in "$S/tls.crt" -noout -pubkey 2>/dev/null)" ] \
    && [ -n "$(openssl x509 -in "$S/tls.crt" -noout -pubkey 2>/dev/null)" ]; then
    ok "init-secrets.sh: tls.key matches tls.crt"
else
    notok "init-secrets.sh: tls.key matches tls.crt" "public keys differ"
fi
key=$(tr -d '\n' <"$S/session_key")
if [[ "$key" =~ ^[0-9a-f]{64}$ ]]; then
    ok "init-secrets.sh: session_key is 32 random bytes in hex"
else
    notok "init-secrets.sh: session_key is 32 random bytes in hex" "got ${#key} characters"
fi
before=$(cd "$S" && sha256sum $expected)
out=$(docker/init-secrets.sh ems.example.com 2>&1)
after=$(cd "$S" && sha256sum $expected)
if [ "$before" = "$after" ] && [[ "$out" == *"nothing made"* ]]; then
    ok "init-secrets.sh: a second run keeps every file"
else
    notok "init-secrets.sh: a second run keeps every file" "files changed or output was: $out"
fi
dmode=$(stat -c %a "$S")
if [ "$dmode" = 700 ] && [ "$(stat -c %a "$S/ca.key")" = 600 ]; then
    ok "init-secrets.sh: the directory is private (0700) and ca.key is 0600"
else
    notok "init-secrets.sh: the directory is private (0700) and ca.key is 0600" "dir $dmode, ca.key $(stat -c %a "$S/ca.key")"
fi

# Secrets belong to the container user that reads them, certificates are
# public (init-secrets.sh's table). Owners can only be set by root.
modes=""
want_modes() { # FILE MODE UID:GID
    got=$(stat -c '%a %u:%g' "$S/$1")
    [ "$got" = "$2 $3" ] || modes="$modes $1=$got(want $2 $3)"
}
if [ "$(id -u)" = 0 ]; then
    want_modes session_key 600 10001:10001
    want_modes tls.key 600 10001:10001
    want_modes pg_ems_password 640 10001:70
    want_modes pg_superuser_password 600 70:70
    want_modes pg_reader_password 640 472:70
    want_modes grafana_admin_password 600 472:472
    want_modes ca.key 600 0:0
    want_modes ca.crt 644 0:0
    want_modes tls.crt 644 0:0
    if [ -z "$modes" ]; then
        ok "init-secrets.sh: secrets 0600/0640 owned by their container user, certificates 0644"
    else
        notok "init-secrets.sh: secrets 0600/0640 owned by their container user, certificates 0644" "$modes"
    fi
    # An older directory with world-readable secrets is repaired by a rerun.
    chmod 644 "$S/session_key" "$S/tls.key"
    docker/init-secrets.sh >/dev/null 2>&1
    if [ "$(stat -c %a "$S/session_key") $(stat -c %a "$S/tls.key")" = "600 600" ]; then
        ok "init-secrets.sh: a rerun restricts secrets left 0644"
    else
        notok "init-secrets.sh: a rerun restricts secrets left 0644" "session_key $(stat -c %a "$S/session_key"), tls.key $(stat -c %a "$S/tls.key")"
    fi
else
    skip "init-secrets.sh: secrets owned by their container user" "not root: owners cannot be set"
fi

# ---------------------------------------------------------------- compose validates
if out=$(docker-compose -f "$COMPOSE_FILE" config -q 2>&1); then
    ok "docker-compose config validates $COMPOSE_FILE"
else
    notok "docker-compose config validates $COMPOSE_FILE" "$(echo "$out" | head -n 5 | tr '\n' ' ')"
fi
if out=$(docker-compose -f "$COMPOSE_FILE" --profile sim --profile monitoring --profile scale config -q 2>&1); then
    ok "docker-compose config validates with the profiles sim, monitoring and scale"
else
    notok "docker-compose config validates with the profiles sim, monitoring and scale" "$(echo "$out" | head -n 5 | tr '\n' ' ')"
fi
# The environment must not leak into what is checked next. The profile
# "scale" is resolved as docs/deploy-cloud.md sets it up (EMS_NATS_URL in
# docker/.env); without it the first gateway has no bus.
env -u EMS_HTTPS_PORT EMS_NATS_URL=nats://nats:4222 docker-compose -f "$COMPOSE_FILE" \
    --profile sim --profile monitoring --profile scale config \
    >"$TMP/resolved.yml" 2>"$TMP/resolved.err"
env -u EMS_HTTPS_PORT -u EMS_NATS_URL docker-compose -f "$COMPOSE_FILE" config \
    >"$TMP/resolved-base.yml" 2>>"$TMP/resolved.err"

# ---------------------------------------------------------------- compose promises
"$PY" - "$TMP/resolved.yml" "$S" "$ROOT/test/lib" <<'PY'
import os, re, sys, yaml

sys.path.insert(0, sys.argv[3])
import emstest  # test/lib/emstest.py

doc = yaml.safe_load(open(sys.argv[1]))
secrets_dir = sys.argv[2]
svcs = doc.get("services", {})
tap = emstest.Tap()
check = tap.ok  # check(name, cond, why)

core = ["db", "dbwriter", "gateway"]
check("compose: db, dbwriter and gateway are defined", all(s in svcs for s in core),
      f"services: {sorted(svcs)}")
check("compose: profile sim has simulated edges and a provisioning step",
      {"sim-provision", "sim-sunny", "sim-evening", "sim-faulty"} <= set(svcs), f"services: {sorted(svcs)}")
check("compose: profile monitoring has prometheus and grafana",
      {"prometheus", "grafana"} <= set(svcs), f"services: {sorted(svcs)}")

bad = [n for n, s in svcs.items() if n != "sim-provision" and s.get("restart") not in ("unless-stopped", "always")]
check("compose: every long-running service restarts by itself", not bad, f"no restart policy: {bad}")
bad = [n for n in core if "test" not in (svcs.get(n, {}).get("healthcheck") or {})]
check("compose: db, dbwriter and gateway have health checks", not bad, f"missing: {bad}")
hc = " ".join(svcs.get("db", {}).get("healthcheck", {}).get("test", []))
check("compose: the database health check is pg_isready", "pg_isready" in hc, hc)
hc = " ".join(svcs.get("gateway", {}).get("healthcheck", {}).get("test", []))
check("compose: the gateway health check asks GET /healthz", "/healthz" in hc, hc)
hc = " ".join(svcs.get("dbwriter", {}).get("healthcheck", {}).get("test", []))
check("compose: the DB writer health check asks the writer (ems-dbwriter --health), not the socket file",
      "--health" in hc and "test -S" not in hc, hc)

dep = svcs.get("dbwriter", {}).get("depends_on", {})
check("compose: the DB writer waits for a healthy database",
      isinstance(dep, dict) and dep.get("db", {}).get("condition") == "service_healthy", str(dep))
for n in ("sim-sunny", "sim-evening", "sim-faulty"):
    dep = svcs.get(n, {}).get("depends_on", {})
    if not (isinstance(dep, dict) and dep.get("sim-provision", {}).get("condition") == "service_completed_successfully"):
        check(f"compose: {n} starts after its device is provisioned", False, str(dep))
        break
else:
    check("compose: the simulated edges start after their devices are provisioned", True, "")

# Third-party images pinned by a tag (never :latest, never untagged); ours are
# built from this repository.
ours = re.compile(r"^[^/]+/(dbwriter|gateway|edge-sim):")
bad = []
for n, s in svcs.items():
    img = s.get("image", "")
    if "build" in s or ours.match(img):
        continue
    tag = img.rsplit("/", 1)[-1]
    if ":" not in tag or tag.endswith(":latest"):
        bad.append(f"{n}={img}")
check("compose: third-party images are pinned by tag", not bad, f"unpinned: {bad}")
img = svcs.get("db", {}).get("image", "")
check("compose: the database is the official TimescaleDB image on PostgreSQL 15",
      img.startswith("timescale/timescaledb:") and img.endswith("-pg15"), img)

def mounts(s):
    out = {}
    for v in s.get("volumes", []):
        if isinstance(v, dict):
            out[v.get("target")] = v.get("source")
        else:
            parts = v.split(":")
            out[parts[1]] = parts[0]
    return out
gw, dbw = mounts(svcs.get("gateway", {})), mounts(svcs.get("dbwriter", {}))
check("compose: gateway and DB writer share one named volume at /run/ems",
      gw.get("/run/ems") and gw.get("/run/ems") == dbw.get("/run/ems")
      and gw.get("/run/ems") in (doc.get("volumes") or {}), f"gateway {gw.get('/run/ems')}, dbwriter {dbw.get('/run/ems')}")
check("compose: the database keeps its data in a named volume",
      mounts(svcs.get("db", {})).get("/var/lib/postgresql/data") in (doc.get("volumes") or {}),
      str(mounts(svcs.get("db", {}))))

pub = [n for n, s in svcs.items() if s.get("ports") and n not in ("gateway", "grafana", "proxy")]
check("compose: only the gateway (and Grafana, and the scale profile's proxy) publish ports", not pub,
      f"also published: {pub}")
gp = svcs.get("grafana", {}).get("ports", [])
gp_ok = all((p.get("host_ip") if isinstance(p, dict) else str(p).split(":")[0]) == "127.0.0.1" for p in gp)
check("compose: Grafana is published on loopback only by default", gp and gp_ok, str(gp))
net = (doc.get("networks") or {}).get("backend", {})
check("compose: the database network is internal", net.get("internal") is True, str(net))

# Secrets: from files, never as literal values in the environment.
bad = []
for n, s in svcs.items():
    env = s.get("environment") or {}
    for k, v in env.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", k) and not k.endswith("_FILE") and "$" not in str(v):
            bad.append(f"{n}.{k}")
        if re.search(r"password=", str(v), re.I):
            bad.append(f"{n}.{k} (password in a DSN)")
check("compose: no secret is written into the environment", not bad, f"{bad}")
sec = doc.get("secrets") or {}
missing = [f"{k}={v.get('file')}" for k, v in sec.items() if not os.path.isfile(v.get("file", ""))]
check("compose: every secret file is one init-secrets.sh makes", sec and not missing, f"missing: {missing}")
used = {x if isinstance(x, str) else x.get("source") for s in svcs.values() for x in s.get("secrets", [])}
check("compose: every secret a service uses is declared", used <= set(sec), f"undeclared: {used - set(sec)}")
need = {"gateway": {"tls_cert", "tls_key", "session_key"}, "dbwriter": {"pg_ems_password"},
        "db": {"pg_superuser_password", "pg_ems_password", "pg_reader_password"}}
for n, want in need.items():
    got = {x if isinstance(x, str) else x.get("source") for x in svcs.get(n, {}).get("secrets", [])}
    if not want <= got:
        check(f"compose: {n} gets its secrets", False, f"missing {want - got}")
        break
else:
    check("compose: gateway, DB writer and database get their secrets", True, "")

# Profile "scale" (docs/scaling.md): nats-server, a second gateway, HAProxy.
scale = {"nats", "gateway2", "proxy"}
check("compose: profile scale has nats, gateway2 and proxy", scale <= set(svcs), f"services: {sorted(svcs)}")
check("compose: nats, gateway2 and proxy are only in the profile scale",
      all(svcs.get(n, {}).get("profiles") == ["scale"] for n in scale),
      str({n: svcs.get(n, {}).get("profiles") for n in scale}))
def flag(svc, name):
    cmd = svcs.get(svc, {}).get("command") or []
    for i, a in enumerate(cmd):
        if a == f"--{name}" and i + 1 < len(cmd):
            return cmd[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None
gws = ["gateway", "gateway2"]
urls = {g: flag(g, "nats_url") for g in gws}
check("compose: with EMS_NATS_URL set, both gateways use nats_url nats://nats:4222",
      all(u == "nats://nats:4222" for u in urls.values()), str(urls))
ids = {g: flag(g, "gateway_id") for g in gws}
check("compose: each gateway has its own gateway_id", all(ids.values()) and len(set(ids.values())) == 2, str(ids))
nats_cmd = " ".join(svcs.get("nats", {}).get("command") or [])
nats_ok = "-p 4222" in nats_cmd or "4222" in " ".join(svcs.get("nats", {}).get("expose") or []) or not nats_cmd
check("compose: the NATS server listens where the gateways look (4222)", nats_ok, nats_cmd)
bad = [n for n in scale if "test" not in (svcs.get(n, {}).get("healthcheck") or {})]
check("compose: nats, gateway2 and proxy have health checks", not bad, f"missing: {bad}")
hc = {n: " ".join(svcs.get(n, {}).get("healthcheck", {}).get("test", [])) for n in ("gateway2", "proxy")}
check("compose: the health checks of gateway2 and the proxy ask GET /healthz",
      all("/healthz" in v for v in hc.values()), str(hc))
dep = svcs.get("gateway2", {}).get("depends_on", {})
check("compose: gateway2 waits for a healthy NATS server",
      isinstance(dep, dict) and dep.get("nats", {}).get("condition") == "service_healthy", str(dep))
nats = svcs.get("nats", {})
check("compose: the NATS server is not published and only on the internal network",
      not nats.get("ports") and list(nats.get("networks") or {}) == ["backend"],
      f"ports {nats.get('ports')}, networks {nats.get('networks')}")
g2 = mounts(svcs.get("gateway2", {}))
g2sec = {x if isinstance(x, str) else x.get("source") for x in svcs.get("gateway2", {}).get("secrets", [])}
check("compose: gateway2 shares the DB writer socket volume and gets the same secrets as gateway",
      g2.get("/run/ems") == gw.get("/run/ems") and {"tls_cert", "tls_key", "session_key"} <= g2sec,
      f"/run/ems {g2.get('/run/ems')}, secrets {g2sec}")
check("compose: gateway2 publishes no port (the proxy does)", not svcs.get("gateway2", {}).get("ports"),
      str(svcs.get("gateway2", {}).get("ports")))
sys.exit(tap.status())
PY
[ $? -eq 0 ] || fails=$((fails + 1))

# Without EMS_NATS_URL the first gateway has an empty nats_url: no bus, the
# gateway behaves as a single gateway always did.
u=$("$PY" - "$TMP/resolved-base.yml" <<'PY'
import sys, yaml
cmd = yaml.safe_load(open(sys.argv[1]))["services"]["gateway"]["command"]
print(repr(cmd[cmd.index("--nats_url") + 1]) if "--nats_url" in cmd else "absent")
PY
)
if [ "$u" = "''" ] || [ "$u" = absent ]; then
    ok "compose: without EMS_NATS_URL the gateway has no bus (nats_url empty)"
else
    notok "compose: without EMS_NATS_URL the gateway has no bus (nats_url empty)" "nats_url is $u"
fi
# docker/haproxy.cfg: TCP mode (TLS passes through), both gateways behind
# it with a health check on /healthz, and HAProxy 2.6 (Debian 12) accepts it.
hbad=""
grep -qE '^\s*mode tcp' docker/haproxy.cfg || hbad="$hbad no 'mode tcp';"
grep -qE '^\s*http-check send meth GET uri /healthz' docker/haproxy.cfg || hbad="$hbad no GET /healthz check;"
for g in gateway gateway2; do
    grep -qE "^\s*server $g $g:8443" docker/haproxy.cfg || hbad="$hbad no server $g;"
done
grep -qE '^\s*default-server .*\bcheck\b.*check-ssl' docker/haproxy.cfg || hbad="$hbad servers not checked over TLS;"
if [ -z "$hbad" ]; then
    ok "haproxy.cfg: TCP mode, gateway and gateway2 checked with GET /healthz over TLS"
else
    notok "haproxy.cfg: TCP mode, gateway and gateway2 checked with GET /healthz over TLS" "$hbad"
fi
if command -v haproxy >/dev/null 2>&1; then
    if out=$(haproxy -c -f docker/haproxy.cfg 2>&1); then
        ok "haproxy.cfg: haproxy -c accepts it"
    else
        notok "haproxy.cfg: haproxy -c accepts it" "$(echo "$out" | grep -m 3 ALERT | tr '\n' ' ')"
    fi
else
    skip "haproxy.cfg: haproxy -c accepts it" "haproxy not installed"
fi

# The simulated edges' command lines, as the compose file gives them, are
# accepted by the real ems-edge (paths moved into the scratch directory).
if [ -x "$BUILD/ems-edge" ]; then
    openssl rand -hex 32 >"$TMP/sim.token"
    bad=""
    for svc in sim-sunny sim-evening sim-faulty; do
        mapfile -t args < <("$PY" - "$TMP/resolved.yml" "$svc" <<'PY'
import sys, yaml
for a in yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]]["command"]:
    print(a)
PY
)
        for i in "${!args[@]}"; do
            case "${args[$i]}" in
                /run/secrets/ca_cert) args[i]=$S/ca.crt ;;
                /var/lib/ems/sim-tokens/*) args[i]=$TMP/sim.token ;;
                /var/lib/ems-edge/*) args[i]=$TMP/$svc.buffer ;;
            esac
        done
        out=$("$BUILD/ems-edge" "${args[@]}" --check 2>&1) || bad="$bad $svc: $(echo "$out" | tail -n 1)"
    done
    if [ -z "$bad" ]; then
        ok "compose: ems-edge accepts the simulated edges' command lines (--check)"
    else
        notok "compose: ems-edge accepts the simulated edges' command lines (--check)" "$bad"
    fi
else
    skip "compose: ems-edge accepts the simulated edges' command lines" "$BUILD/ems-edge not built"
fi

# Files the compose file mounts from docker/.
missing=""
for f in docker/gateway.conf docker/db-init/10-ems-roles.sh docker/sim/provision.sh \
         docker/monitoring/prometheus.yml docker/monitoring/grafana/provisioning/datasources/ems.yml \
         docker/monitoring/grafana/provisioning/dashboards/ems.yml; do
    [ -f "$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then ok "compose: every mounted file exists"; else notok "compose: every mounted file exists" "missing:$missing"; fi
if "$PY" -c 'import json,glob,sys; [json.load(open(f)) for f in glob.glob("docker/monitoring/grafana/dashboards/*.json")] or sys.exit(1)' 2>"$TMP/json.err"; then
    ok "monitoring: the Grafana dashboards are valid JSON"
else
    notok "monitoring: the Grafana dashboards are valid JSON" "$(head -c 200 "$TMP/json.err")"
fi

# ---------------------------------------------------------------- Dockerfiles
# Packages of a stage: the names after "apt-get install" up to the next "&&".
stage_packages() { # DOCKERFILE STAGE(build|final)
    "$PY" - "$1" "$2" <<'PY'
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
stages = re.split(r"(?m)^FROM\s", text)[1:]
stage = [s for s in stages if " AS build" in s.split("\n")[0]] if sys.argv[2] == "build" else stages[-1:]
for s in stage:
    for m in re.finditer(r"apt-get install ([^&\n]*)", s):
        print(" ".join(w for w in m.group(1).split() if not w.startswith("-")))
PY
}

# One apt-cache call for all of them (each call reloads the package cache).
all_pkgs=$(for df in docker/Dockerfile.*; do stage_packages "$df" build; stage_packages "$df" final; done | tr ' ' '\n' | sort -u)
# shellcheck disable=SC2086
known=" $(apt-cache policy $all_pkgs 2>/dev/null | awk '/^[^ ]/ { p = $1; sub(/:$/, "", p) } /Candidate:/ && $2 != "(none)" { print p }' | tr '\n' ' ') "
for df in docker/Dockerfile.gateway docker/Dockerfile.dbwriter docker/Dockerfile.edge \
    docker/Dockerfile.nats docker/Dockerfile.proxy; do
    name=$(basename "$df")
    pkgs="$(stage_packages "$df" build) $(stage_packages "$df" final)"
    bad=""
    for p in $pkgs; do
        [[ "$known" == *" $p "* ]] || bad="$bad $p"
    done
    if [ -n "$pkgs" ] && [ -z "$bad" ]; then
        ok "$name: every package it installs exists in Debian 12"
    else
        notok "$name: every package it installs exists in Debian 12" "unknown:${bad:- (no packages found)}"
    fi
    last_from=$(grep -n '^FROM ' "$df" | tail -n 1 | cut -d: -f1)
    user=$(tail -n +"$last_from" "$df" | grep -E '^USER ' | tail -n 1 | awk '{print $2}')
    if [ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ]; then
        ok "$name: the final image runs as a non-root user ($user)"
    else
        notok "$name: the final image runs as a non-root user" "USER is '${user:-unset}'"
    fi
    # Base images by ARG with a pinned default tag.
    froms=$(grep -E '^ARG [A-Z_]+_IMAGE=' "$df" | cut -d= -f2-)
    badfrom=""
    for f in $froms; do
        if [[ "$f" != *:* || "$f" == *:latest ]]; then badfrom="$badfrom $f"; fi
    done
    if grep -qE '^FROM \$\{[A-Z_]+_IMAGE\}' "$df" && [ -n "$froms" ] && [ -z "$badfrom" ]; then
        ok "$name: base images are pinned by tag ($(echo $froms))"
    else
        notok "$name: base images are pinned by tag" "ARGs: '$froms' bad: '$badfrom'"
    fi
    # COPY sources (not --from) exist and are not excluded by .dockerignore.
    badcopy=""
    while read -r src; do
        [ -e "$src" ] || { badcopy="$badcopy $src(missing)"; continue; }
        top=${src%%/*}
        if grep -qxE "${top}/?" .dockerignore || grep -qxE "${src%/}" .dockerignore; then
            badcopy="$badcopy $src(ignored)"
        fi
    done < <(grep -E '^COPY ' "$df" | grep -v -- '--from=' | "$PY" -c '
import sys
for line in sys.stdin:
    w = line.split()[1:]
    for s in w[:-1]:
        print(s)')
    if [ -z "$badcopy" ]; then
        ok "$name: every COPY source is in the build context"
    else
        notok "$name: every COPY source is in the build context" "$badcopy"
    fi
done

# The C stage of the Dockerfiles builds from what they copy (Makefile,
# common/, edge/, cloud/), not from the whole tree: a source that includes a
# header from elsewhere (test/, build/) would break the image build only.
ctx=$TMP/context
mkdir -p "$ctx"
tar -c --exclude=node_modules --exclude='*.o' --exclude='*.d' Makefile common edge cloud | tar -x -C "$ctx"
# The targets of their "RUN make ..." lines.
targets=$(grep -hE '^RUN make ' docker/Dockerfile.* | grep -oE 'build/[A-Za-z0-9_-]+' | sort -u | tr '\n' ' ')
# shellcheck disable=SC2086
if out=$(make -C "$ctx" -j"$(nproc)" -s $targets 2>&1); then
    ok "Dockerfiles: the C build works from the copied sources alone (${targets% })"
else
    notok "Dockerfiles: the C build works from the copied sources alone" "$(echo "$out" | grep -m 3 -E 'error|Error|No rule' | tr '\n' ' ')"
fi

# Runtime libraries: every shared library a binary links directly must come
# from a package the final image installs (or from the base image). Read from
# the binaries just built from the copied sources, with the flags the
# Dockerfiles use (the sanitized test build links more: no --as-needed effect).
base_pkgs="libc6 libgcc-s1 libstdc++6 zlib1g"
check_runtime() { # DOCKERFILE BINARY...
    local df=$1 name missing="" have b lib path pkg
    shift
    name=$(basename "$df")
    have=" $(stage_packages "$df" final | tr '\n' ' ') $base_pkgs "
    for b in "$@"; do
        if [ ! -x "$IMGBUILD/$b" ]; then
            skip "$name: runtime packages cover the libraries of $b" "$IMGBUILD/$b not built yet"
            return 0
        fi
    done
    for b in "$@"; do
        # Direct dependencies only (NEEDED); theirs come with their packages.
        local needed
        needed=" $(objdump -p "$IMGBUILD/$b" | awk '$1 == "NEEDED" {print $2}' | tr '\n' ' ') "
        while read -r lib path; do
            [[ "$needed" == *" $lib "* ]] || continue
            case "$lib" in libasan*|libubsan*|liblsan*|libtsan*|linux-vdso*|ld-linux*) continue ;; esac
            pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n 1 | cut -d: -f1)
            [ -n "$pkg" ] || pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1)
            if [ -z "$pkg" ]; then
                missing="$missing $b:$lib(no package)"
            elif [[ "$have" != *" $pkg "* ]]; then
                missing="$missing $b:$lib($pkg)"
            fi
        done < <(ldd "$IMGBUILD/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
    done
    if [ -z "$missing" ]; then
        ok "$name: runtime packages cover the libraries of $*"
    else
        notok "$name: runtime packages cover the libraries of $*" "not installed:$missing"
    fi
}
IMGBUILD=$ctx/build
check_runtime docker/Dockerfile.gateway ems-gateway
check_runtime docker/Dockerfile.dbwriter ems-dbwriter emsctl
check_runtime docker/Dockerfile.edge ems-edge

# ---------------------------------------------------------------- db-init on PostgreSQL
. "$ROOT/test/lib/pg.sh"
EMS_PG_NO_TRAP=1
export EMS_PG_NO_TRAP
if ! ems_pg_start 2>"$TMP/pg.err"; then
    notok "db-init: PostgreSQL 15 starts" "$(tail -n 3 "$TMP/pg.err" | tr '\n' ' ')"
else
    PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$EMS_PG_SOCKDIR" -p "$EMS_PG_PORT")
    "${PSQL[@]}" -U postgres -d postgres -c 'CREATE DATABASE ems' >/dev/null
    if out=$(PGHOST=$EMS_PG_SOCKDIR PGPORT=$EMS_PG_PORT POSTGRES_USER=postgres POSTGRES_DB=ems \
        docker/db-init/10-ems-roles.sh 2>&1); then
        ok "db-init: 10-ems-roles.sh runs on PostgreSQL 15"
    else
        notok "db-init: 10-ems-roles.sh runs on PostgreSQL 15" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
    fi
    owner=$("${PSQL[@]}" -U postgres -d ems -Atc "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'ems'")
    super=$("${PSQL[@]}" -U postgres -d ems -Atc "SELECT string_agg(rolname || '=' || rolsuper, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('ems', 'ems_reader')")
    if [ "$owner" = ems ] && [ "$super" = "ems=false,ems_reader=false" ]; then
        ok "db-init: ems owns the database; neither role is a superuser"
    else
        notok "db-init: ems owns the database; neither role is a superuser" "owner '$owner', roles '$super'"
    fi
    # ems can create what the migrations create; ems_reader reads it and cannot write.
    if "${PSQL[@]}" -U ems -d ems -c 'CREATE TABLE probe (x int); INSERT INTO probe VALUES (1); CREATE VIEW probe_v AS SELECT x FROM probe' >/dev/null 2>"$TMP/e1"; then
        ok "db-init: ems creates tables and views in schema public"
    else
        notok "db-init: ems creates tables and views in schema public" "$(head -c 200 "$TMP/e1")"
    fi
    r=$("${PSQL[@]}" -U ems_reader -d ems -Atc 'SELECT (SELECT x FROM probe) + (SELECT x FROM probe_v)' 2>"$TMP/e2")
    if [ "$r" = 2 ]; then
        ok "db-init: ems_reader reads what ems creates later"
    else
        notok "db-init: ems_reader reads what ems creates later" "got '$r' $(head -c 200 "$TMP/e2")"
    fi
    if "${PSQL[@]}" -U ems_reader -d ems -c 'INSERT INTO probe VALUES (2)' >/dev/null 2>&1 \
        || "${PSQL[@]}" -U ems_reader -d ems -c 'CREATE TABLE nope (x int)' >/dev/null 2>&1; then
        notok "db-init: ems_reader cannot write" "an INSERT or CREATE TABLE succeeded"
    else
        ok "db-init: ems_reader cannot write"
    fi
    # The migrations and provisioning run as the non-superuser "ems" (what the
    # DB writer and emsctl log in as in the compose setup), through the real
    # emsctl and docker/sim/provision.sh.
    if [ -x "$BUILD/emsctl" ] && "$BUILD/emsctl" device --help >/dev/null 2>&1; then
        export EMS_DB_DIR=$ROOT/cloud/db
        tokdir=$TMP/sim-tokens
        mkdir -p "$tokdir"
        prov() {
            EMS_PG_DSN="host=$EMS_PG_SOCKDIR port=$EMS_PG_PORT dbname=ems user=ems" \
                PATH="$BUILD:$PATH" docker/sim/provision.sh "$tokdir" "$@"
        }
        if out=$(prov sim_a sim_b 2>&1) && [ "$(cat "$tokdir"/sim_a.token "$tokdir"/sim_b.token | grep -cE '^[0-9a-f]{64}$')" = 2 ]; then
            ok "sim/provision.sh: registers devices as role ems (migrations included) and keeps their tokens"
        else
            notok "sim/provision.sh: registers devices as role ems (migrations included) and keeps their tokens" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
        fi
        hashes=$("${PSQL[@]}" -U postgres -d ems -Atc "SELECT device_id || '=' || token_hash FROM devices WHERE device_id IN ('sim_a','sim_b') ORDER BY 1" 2>&1 | tr '\n' ' ')
        want="sim_a=$(tr -d '\n' <"$tokdir/sim_a.token" | sha256sum | cut -d' ' -f1) sim_b=$(tr -d '\n' <"$tokdir/sim_b.token" | sha256sum | cut -d' ' -f1) "
        if [ "$hashes" = "$want" ]; then
            ok "sim/provision.sh: the database holds the SHA-256 of each token file"
        else
            notok "sim/provision.sh: the database holds the SHA-256 of each token file" "db '$hashes' files '$want'"
        fi
        before=$(cat "$tokdir/sim_a.token")
        rm -f "$tokdir/sim_b.token"
        if out=$(prov sim_a sim_b 2>&1) && [ "$(cat "$tokdir/sim_a.token")" = "$before" ] && [ -s "$tokdir/sim_b.token" ]; then
            ok "sim/provision.sh: a second run keeps tokens and re-issues a lost one"
        else
            notok "sim/provision.sh: a second run keeps tokens and re-issues a lost one" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
        fi
        unset EMS_DB_DIR
    else
        skip "sim/provision.sh: registers devices as role ems" "$BUILD/emsctl with 'device' not built"
    fi
    # Passwords over TCP with scram-sha-256: prepend rules for the two roles
    # (the test cluster trusts everything else) and log in the way the DB
    # writer does, through ems-entrypoint.sh and EMS_PG_PASSWORD_FILE.
    hba=$EMS_PG_DIR/data/pg_hba.conf
    { echo "host all ems,ems_reader 127.0.0.1/32 scram-sha-256"; cat "$hba"; } >"$TMP/hba"
    cat "$TMP/hba" >"$hba"
    "${PSQL[@]}" -U postgres -d postgres -Atc 'SELECT pg_reload_conf()' >/dev/null
    sleep 0.5
    dsn="host=127.0.0.1 port=$EMS_PG_PORT dbname=ems user=ems"
    r=$(env -u PGPASSWORD EMS_PG_PASSWORD_FILE="$S/pg_ems_password" docker/ems-entrypoint.sh \
        psql -X -Atc 'SELECT current_user' "$dsn" 2>"$TMP/e3")
    if [ "$r" = ems ]; then
        ok "db-init: ems logs in over TCP with pg_ems_password through ems-entrypoint.sh"
    else
        notok "db-init: ems logs in over TCP with pg_ems_password through ems-entrypoint.sh" "got '$r' $(head -c 200 "$TMP/e3")"
    fi
    echo wrong >"$TMP/wrong"
    if env -u PGPASSWORD EMS_PG_PASSWORD_FILE="$TMP/wrong" docker/ems-entrypoint.sh \
        psql -X -Atc 'SELECT 1' "$dsn" >/dev/null 2>&1; then
        notok "db-init: a wrong password is refused" "login succeeded"
    else
        ok "db-init: a wrong password is refused"
    fi
    r=$(PGPASSWORD=$(cat "$S/pg_reader_password") psql -X -Atc 'SELECT current_user' \
        "host=127.0.0.1 port=$EMS_PG_PORT dbname=ems user=ems_reader" 2>"$TMP/e4")
    if [ "$r" = ems_reader ]; then
        ok "db-init: ems_reader logs in over TCP with pg_reader_password"
    else
        notok "db-init: ems_reader logs in over TCP with pg_reader_password" "got '$r' $(head -c 200 "$TMP/e4")"
    fi

    # The compose wiring on the real binaries, without Docker: the DB writer
    # logs in as the container does (ems-entrypoint.sh, password file, TCP
    # with scram) and listens on the shared socket; the gateway loads
    # docker/gateway.conf (paths and the port overridden by flags, which win
    # over the file) with the certificate init-secrets.sh made; the health
    # checks of the compose file then answer as they would in the containers.
    if ! command -v curl >/dev/null 2>&1; then
        skip "wiring: DB writer and gateway with the compose settings" "curl (the gateway image's health check tool) is not installed"
    elif [ -x "$BUILD/ems-dbwriter" ] && [ -x "$BUILD/ems-gateway" ]; then
        run=$TMP/run
        mkdir -p "$run" "$TMP/static"
        echo '<!doctype html><title>ems</title>' >"$TMP/static/index.html"
        EMS_PG_DSN="$dsn application_name=ems-dbwriter" EMS_PG_PASSWORD_FILE="$S/pg_ems_password" \
            EMS_DBWRITER_SOCKET=$run/dbwriter.sock EMS_DB_DIR=$ROOT/cloud/db \
            docker/ems-entrypoint.sh "$BUILD/ems-dbwriter" >"$TMP/dbwriter.log" 2>&1 &
        dbw_pid=$!
        # --gateway_id and an empty --nats_url as the compose file gives
        # them without EMS_NATS_URL: no bus.
        "$BUILD/ems-gateway" --config docker/gateway.conf --gateway_id gw1 --nats_url "" \
            --listen 127.0.0.1:0 \
            --port_file "$run/port" --tls_cert "$S/tls.crt" --tls_key "$S/tls.key" \
            --session_key_file "$S/session_key" --dbwriter_socket "$run/dbwriter.sock" \
            --static_dir "$TMP/static" >"$TMP/gateway.log" 2>&1 &
        gw_pid=$!
        for _ in $(seq 1 100); do
            [ -s "$run/port" ] && [ -S "$run/dbwriter.sock" ] && break
            sleep 0.1
        done
        port=$(cat "$run/port" 2>/dev/null)
        # The compose health checks, with the container's port replaced.
        dbw_health() { EMS_DBWRITER_SOCKET=$run/dbwriter.sock "$BUILD/ems-dbwriter" --health >/dev/null 2>&1; }
        gw_health() { curl -fsSk --max-time 4 "https://127.0.0.1:$port/healthz" >/dev/null 2>&1; }
        for _ in $(seq 1 50); do dbw_health && break; sleep 0.2; done
        if dbw_health; then
            ok "wiring: the DB writer logs in as ems through ems-entrypoint.sh and its health check passes"
        else
            notok "wiring: the DB writer logs in as ems through ems-entrypoint.sh and its health check passes" "$(tail -n 3 "$TMP/dbwriter.log" | tr '\n' ' ')"
        fi
        healthy=0
        for _ in $(seq 1 50); do
            if [ -n "$port" ] && gw_health; then healthy=1; break; fi
            sleep 0.2
        done
        if [ "$healthy" = 1 ]; then
            ok "wiring: the gateway takes docker/gateway.conf and its health check passes once the DB writer is linked"
        else
            notok "wiring: the gateway takes docker/gateway.conf and its health check passes once the DB writer is linked" "port '$port'; $(tail -n 3 "$TMP/gateway.log" | tr '\n' ' ')"
        fi
        # The Grafana dashboard's SQL runs as ems_reader on the schema the DB
        # writer just made (plain PostgreSQL here; TimescaleDB has the same
        # telemetry and telemetry_1m columns).
        for _ in $(seq 1 50); do
            [ "$("${PSQL[@]}" -U postgres -d ems -Atc "SELECT to_regclass('public.telemetry_1m') IS NOT NULL")" = t ] && break
            sleep 0.2
        done
        sqlbad=""
        nsql=0
        while IFS= read -r -d '' q; do
            nsql=$((nsql + 1))
            q=$(printf '%s' "$q" | sed -E "s/\\\$__timeFilter\(([a-z_]+)\)/\1 > now() - INTERVAL '1 day'/g")
            "${PSQL[@]}" -U ems_reader -d ems -c "$q" >/dev/null 2>"$TMP/sql.err" ||
                sqlbad="$sqlbad [$(head -c 150 "$TMP/sql.err" | tr '\n' ' ')]"
        done < <("$PY" -c '
import json, glob, sys
for f in glob.glob("docker/monitoring/grafana/dashboards/*.json"):
    for p in json.load(open(f))["panels"]:
        for t in p.get("targets", []):
            if "rawSql" in t:
                sys.stdout.write(t["rawSql"] + "\0")')
        if [ "$nsql" -gt 0 ] && [ -z "$sqlbad" ]; then
            ok "monitoring: the dashboard's $nsql SQL queries run as ems_reader on the DB writer's schema"
        else
            notok "monitoring: the dashboard's SQL queries run as ems_reader on the DB writer's schema" "$nsql queries;$sqlbad"
        fi
        # What a simulated edge checks: the chain to ca.crt and the name "gateway".
        if [ -n "$port" ] && curl -fsS --max-time 4 --cacert "$S/ca.crt" --resolve "gateway:$port:127.0.0.1" \
            "https://gateway:$port/healthz" >/dev/null 2>"$TMP/curl.err"; then
            ok "wiring: the gateway's certificate verifies as https://gateway against ca.crt"
        else
            notok "wiring: the gateway's certificate verifies as https://gateway against ca.crt" "$(head -c 200 "$TMP/curl.err")"
        fi
        if [ -n "$port" ] && ! curl -fsS --max-time 4 --resolve "gateway:$port:127.0.0.1" \
            "https://gateway:$port/healthz" >/dev/null 2>&1; then
            ok "wiring: without the CA the certificate is not trusted"
        else
            notok "wiring: without the CA the certificate is not trusted" "curl accepted it"
        fi
        kill -TERM "$dbw_pid" 2>/dev/null
        wait "$dbw_pid" 2>/dev/null
        unhealthy=0
        for _ in $(seq 1 50); do
            if ! gw_health; then unhealthy=1; break; fi
            sleep 0.2
        done
        if [ "$unhealthy" = 1 ]; then
            ok "wiring: the gateway's health check fails while the DB writer is down"
        else
            notok "wiring: the gateway's health check fails while the DB writer is down" "healthz stayed 200"
        fi
        kill -TERM "$gw_pid" 2>/dev/null
        wait "$gw_pid" 2>/dev/null
    else
        skip "wiring: DB writer and gateway with the compose settings" "$BUILD/ems-dbwriter or ems-gateway not built"
    fi
fi
if out=$(EMS_PG_PASSWORD_FILE=$TMP/does-not-exist docker/ems-entrypoint.sh true 2>&1); then
    notok "ems-entrypoint.sh refuses an unreadable password file" "it ran the command"
else
    ok "ems-entrypoint.sh refuses an unreadable password file"
fi

# ---------------------------------------------------------------- shell scripts
for f in docker/init-secrets.sh docker/ems-entrypoint.sh docker/sim/provision.sh docker/db-init/10-ems-roles.sh; do
    if [ ! -x "$f" ]; then notok "$f is executable" "mode $(stat -c %a "$f")"; fi
done
if command -v shellcheck >/dev/null 2>&1; then
    if out=$(shellcheck -S warning docker/init-secrets.sh docker/ems-entrypoint.sh docker/sim/provision.sh docker/db-init/10-ems-roles.sh 2>&1); then
        ok "shellcheck: docker/ scripts have no warnings"
    else
        notok "shellcheck: docker/ scripts have no warnings" "$(echo "$out" | head -n 6 | tr '\n' ' ')"
    fi
else
    skip "shellcheck: docker/ scripts have no warnings" "shellcheck not installed"
fi

tap_status
