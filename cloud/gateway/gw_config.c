/* gw_config.c: settings from a file and flags (see gw_config.h). */
#include "gw_config.h"

#include "error.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_STR, T_INT, T_BOOL } kind_t;

typedef struct {
    const char *key;
    kind_t kind;
    size_t off, size;
    int64_t min, max;
    const char *help;
} opt_t;

#define S(f, h) {#f, T_STR, offsetof(gw_config_t, f), sizeof(((gw_config_t *)0)->f), 0, 0, h}
#define I(f, lo, hi, h) {#f, T_INT, offsetof(gw_config_t, f), 0, lo, hi, h}
#define B(f, h) {#f, T_BOOL, offsetof(gw_config_t, f), 0, 0, 0, h}

static const opt_t opts[] = {
    S(listen, "address to listen on, HOST:PORT or [V6]:PORT"),
    B(tls, "serve TLS (off only behind a TLS-terminating proxy)"),
    S(tls_cert, "PEM certificate chain (reloaded on SIGHUP)"),
    S(tls_key, "PEM private key (reloaded on SIGHUP)"),
    S(origins, "allowed Origin values, comma-separated (default: the request's own host)"),
    S(dbwriter_socket, "Unix socket of ems-dbwriter"),
    S(session_key_file, "shared HMAC key for session cookies (>= 32 bytes)"),
    S(static_dir, "dashboard files served at /"),
    S(port_file, "write the bound port to this file (tests)"),
    S(log_level, "error, warn, info or debug"),
    B(reuseport, "SO_REUSEPORT so several gateways share the port"),
    S(nats_url, "NATS server ([nats|tls]://[USER:PASSWORD@]HOST:PORT) joining several gateways; empty: none"),
    S(nats_ca_file, "CA certificate(s) of the NATS server (tls:// nats_url)"),
    S(nats_tls_hostname, "name the NATS server certificate must carry (tls://; default: the URL's host)"),
    S(gateway_id, "this gateway's id on the bus (default host:pid)"),
    I(max_connections, 1, 1000000, "open connections at most"),
    I(device_max_message, 1024, 16 << 20, "largest device message, bytes"),
    I(dashboard_max_message, 256, 16 << 20, "largest dashboard message, bytes"),
    I(http_max_body, 256, 16 << 20, "largest REST request body, bytes"),
    I(handshake_timeout_ms, 100, 600000, "TLS + HTTP upgrade must finish within this"),
    I(ping_interval_s, 1, 3600, "ping an idle connection this often"),
    I(idle_timeout_s, 1, 36000, "close a connection silent this long"),
    I(device_send_queue, 4096, 1 << 30, "bytes queued to a device before it is cut off"),
    I(dashboard_send_queue, 4096, 1 << 30, "bytes queued to a dashboard before it is dropped"),
    I(fleet_interval_ms, 100, 60000, "fleet view: one update per device at most this often, ms"),
    I(ack_delay_ms, 0, GW_ACK_DELAY_MAX_MS,
      "one ack message per device at most this often, ms (0: ack every commit at once)"),
    I(ack_batch, 1, 1000000, "committed seqs that get their ack at once, whatever ack_delay_ms"),
    I(rate_burst, 1, 1000000, "device messages in a burst"),
    I(rate_per_s, 1, 1000000, "device messages per second, sustained"),
    I(command_timeout_s, 1, 86400, "a sent command without an answer times out"),
    I(command_complete_s, 1, 86400, "an accepted command not completed times out"),
    I(auth_cache_s, 0, 86400, "device credential lookups are cached this long"),
    I(recheck_s, 1, 86400, "connected devices' credentials are re-checked this often"),
    I(link_ring, 64, 10000000, "telemetry records held until the DB writer commits"),
    I(link_batch, 1, 10000, "records per frame to the DB writer"),
    I(link_flush_ms, 0, 10000, "a partial batch waits at most this long"),
    I(query_inflight, 1, 1024, "REST queries (history, lists) at the DB writer at once"),
    I(query_per_user, 1, 10000, "one user's REST queries in progress; more get 429"),
    I(query_queue, 1, 1000000, "REST queries waiting for the DB writer; more get 503"),
    I(login_per_min, 1, 100000, "failed logins per client address per minute"),
    I(max_unauth_per_addr, 0, 1000000,
      "connections not yet upgraded per client address (IPv6: per /64); 0: no cap"),
    I(connection_reserve_pct, 0, 90,
      "percent of max_connections kept for authenticated (upgraded) connections"),
    I(handshake_cpu_pct, 1, 100, "share of the event loop's time for TLS handshakes, percent"),
    I(handshake_burst_ms, 1, 1000, "TLS handshake work allowed in one burst, ms"),
    I(handshake_admit_ms, 0, 600000,
      "accept new TLS connections only while the handshakes taken on finish within this at "
      "handshake_cpu_pct, ms (0: handshake_timeout_ms / 2)"),
    I(auth_batch, 1, 1000, "device credential lookups sent to the DB writer in one query"),
    I(auth_queue, 1, 1000000, "device credential lookups waiting for the DB writer; more get 503"),
    I(auth_wait_ms, 100, 600000, "a credential lookup waits at most this long to be sent, ms"),
    I(http_output_budget, 1 << 20, (int64_t)1 << 36,
      "bytes of queued HTTP answers over all connections"),
    I(login_hash_workers, 1, 64, "password hashes at once (libuv's pool has 4 threads)"),
    I(login_queue, 0, 100000, "logins waiting for a password hash at most"),
    I(auth_negative_s, 0, 3600, "unknown-device answers are cached this long"),
    I(telemetry_max_skew_s, 1, 86400, "telemetry stamped further in the future is refused"),
    I(telemetry_max_age_days, 1, 3650, "telemetry older than this is refused"),
    S(energy_time_zone, "IANA time zone of energy days and months (/api/.../energy), e.g. Europe/Berlin"),
    /* Alarms and webhooks (docs/alarms.md). */
    I(alarm_debounce_s, 0, 86400, "an alarm condition must hold this long to raise or clear"),
    I(alarm_soc_low, 0, 100, "battery SoC below this percent raises soc_low; 0: off"),
    I(alarm_soc_hysteresis, 0, 100, "soc_low clears above alarm_soc_low + this percent"),
    I(alarm_offline_s, 0, 30 * 86400, "a device offline this long raises offline; 0: off"),
    S(alarm_webhooks, "http:// or https:// URLs receiving alarm events, comma-separated"),
    S(alarm_webhook_secret_file, "file holding the webhooks' HMAC-SHA256 key"),
    S(alarm_webhook_ca_file, "CA certificates for https webhooks (default: the system's)"),
    I(alarm_webhook_retries, 1, 1000, "delivery attempts of one event before it is dead-lettered"),
    I(alarm_webhook_backoff_ms, 10, 3600000, "first webhook retry delay ceiling, ms"),
    I(alarm_webhook_backoff_max_ms, 10, 86400000, "largest webhook retry delay ceiling, ms"),
    I(alarm_webhook_timeout_ms, 100, 600000, "one webhook delivery attempt must finish within"),
    I(alarm_webhook_lease_s, 1, 3600, "a gateway's claim on a webhook's outbox lasts this long"),
};
#define NOPTS (sizeof opts / sizeof opts[0])

void gw_config_defaults(gw_config_t *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen, "0.0.0.0:8443");
    c->tls = true;
    strcpy(c->dbwriter_socket, "/run/ems/dbwriter.sock");
    strcpy(c->static_dir, "build/dashboard");
    strcpy(c->log_level, "info");
    c->reuseport = true;
    c->max_connections = 19000;
    c->device_max_message = 64 * 1024;
    c->dashboard_max_message = 16 * 1024;
    c->http_max_body = 64 * 1024;
    c->handshake_timeout_ms = 10000;
    c->ping_interval_s = 15;
    c->idle_timeout_s = 45;
    c->device_send_queue = 256 * 1024;
    c->dashboard_send_queue = 1024 * 1024;
    c->fleet_interval_ms = 1000; /* the fleet view's coalescing interval */
    c->ack_delay_ms = 0;
    c->ack_batch = 64;
    c->rate_burst = 20;
    /* ems-edge sends 1 live packet a second plus up to 5 backfill batches
     * a second while it drains a backlog (docs/protocol.md, "Message
     * budget"); 10/s leaves room for both. */
    c->rate_per_s = 10;
    c->command_timeout_s = 10;
    c->command_complete_s = 60;
    c->auth_cache_s = 30;
    c->recheck_s = 60;
    c->link_ring = 262144;
    c->link_batch = 500;
    c->link_flush_ms = 5;
    c->query_inflight = 8;
    c->query_per_user = 4;
    c->query_queue = 256;
    c->login_per_min = 20;
    /* Connection limits (docs/deploy-cloud.md, "Connection limits"). */
    c->max_unauth_per_addr = 64;
    c->connection_reserve_pct = 10;
    c->handshake_cpu_pct = 50;
    c->handshake_burst_ms = 20;
    c->handshake_admit_ms = 0;
    c->auth_batch = 256;
    c->auth_queue = 20000;
    c->auth_wait_ms = 8000;
    c->http_output_budget = 256 << 20;
    c->login_hash_workers = 2;
    c->login_queue = 16;
    c->auth_negative_s = 10;
    /* The edge buffers at most 30 days (buffer_max_age_days) and the DB
     * writer keeps raw rows 30 days; 35 leaves a margin for a device that
     * comes back after a long outage (docs/protocol.md 2.1). */
    c->telemetry_max_skew_s = 300;
    c->telemetry_max_age_days = 35;
    strcpy(c->energy_time_zone, "UTC");
    /* Alarms and webhooks (docs/alarms.md). */
    c->alarm_debounce_s = 10;
    c->alarm_soc_low = 10;
    c->alarm_soc_hysteresis = 5;
    c->alarm_offline_s = 300;
    strcpy(c->alarm_webhook_ca_file, "/etc/ssl/certs/ca-certificates.crt");
    c->alarm_webhook_retries = 10;
    c->alarm_webhook_backoff_ms = 1000;
    c->alarm_webhook_backoff_max_ms = 300000;
    c->alarm_webhook_timeout_ms = 10000;
    c->alarm_webhook_lease_s = 30;
}

static const opt_t *find_opt(const char *key)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    return NULL;
}

int gw_config_set(gw_config_t *c, const char *key, const char *value, char *err, size_t errcap)
{
    const opt_t *o = find_opt(key);
    if (!o) {
        snprintf(err, errcap, "unknown setting '%s'", key);
        return EMS_ECONFIG;
    }
    char *field = (char *)c + o->off;
    switch (o->kind) {
    case T_STR:
        if (strlen(value) >= o->size) {
            snprintf(err, errcap, "%s: value longer than %zu characters", key, o->size - 1);
            return EMS_ECONFIG;
        }
        strcpy(field, value);
        return 0;
    case T_BOOL:
        if (!strcmp(value, "on") || !strcmp(value, "true") || !strcmp(value, "yes") ||
            !strcmp(value, "1")) {
            *(bool *)field = true;
        } else if (!strcmp(value, "off") || !strcmp(value, "false") || !strcmp(value, "no") ||
                   !strcmp(value, "0")) {
            *(bool *)field = false;
        } else {
            snprintf(err, errcap, "%s: '%s' is not on/off", key, value);
            return EMS_ECONFIG;
        }
        return 0;
    case T_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end) {
            snprintf(err, errcap, "%s: '%s' is not an integer", key, value);
            return EMS_ECONFIG;
        }
        if (v < o->min || v > o->max) {
            snprintf(err, errcap, "%s: %lld is outside %lld..%lld", key, v, (long long)o->min,
                     (long long)o->max);
            return EMS_ECONFIG;
        }
        *(int64_t *)field = v;
        return 0;
    }
    }
    return EMS_ECONFIG;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int gw_config_load(gw_config_t *c, const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errcap, "%s: %s", path, strerror(e));
        return -e;
    }
    char line[1024], msg[256];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errcap, "%s:%d: expected 'key = value'", path, lineno);
            rc = EMS_ECONFIG;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (gw_config_set(c, key, val, msg, sizeof msg)) {
            snprintf(err, errcap, "%s:%d: %s", path, lineno, msg);
            rc = EMS_ECONFIG;
            break;
        }
    }
    fclose(f);
    return rc;
}

void gw_config_usage(FILE *out)
{
    fprintf(out, "usage: ems-gateway [-c FILE] [--KEY=VALUE ...]   (ems-gateway --version: the release)\n\n"
                 "Every setting can be given in FILE as 'key = value' or as a flag:\n");
    gw_config_t d;
    gw_config_defaults(&d);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        const char *field = (const char *)&d + o->off;
        char def[GW_PATH_MAX + 8];
        if (o->kind == T_STR)
            snprintf(def, sizeof def, "%s", field[0] ? field : "(none)");
        else if (o->kind == T_BOOL)
            snprintf(def, sizeof def, "%s", *(const bool *)field ? "on" : "off");
        else
            snprintf(def, sizeof def, "%lld", (long long)*(const int64_t *)field);
        fprintf(out, "  --%-22s %s [%s]\n", o->key, o->help, def);
    }
}

int gw_config_from_args(gw_config_t *c, int argc, char **argv, char *err, size_t errcap)
{
    gw_config_defaults(c);
    /* The file first, so flags given anywhere on the line win over it. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            gw_config_usage(stdout);
            return 1;
        }
        const char *file = NULL;
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            if (i + 1 >= argc) {
                snprintf(err, errcap, "%s needs a file name", a);
                return EMS_ECONFIG;
            }
            file = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) {
            file = a + 9;
        }
        if (file) {
            int rc = gw_config_load(c, file, err, errcap);
            if (rc)
                return EMS_ECONFIG;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9))
            continue;
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errcap, "unexpected argument '%s'", a);
            return EMS_ECONFIG;
        }
        char key[64];
        const char *val, *eq = strchr(a + 2, '=');
        size_t klen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (klen >= sizeof key) {
            snprintf(err, errcap, "unknown flag '%s'", a);
            return EMS_ECONFIG;
        }
        memcpy(key, a + 2, klen);
        key[klen] = '\0';
        /* Flags may spell keys with dashes (--max-connections). */
        for (char *p = key; *p; p++)
            if (*p == '-')
                *p = '_';
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errcap, "flag '%s' needs a value", a);
            return EMS_ECONFIG;
        }
        if (gw_config_set(c, key, val, err, errcap))
            return EMS_ECONFIG;
    }
    return 0;
}

int gw_config_check(const gw_config_t *c, char *err, size_t errcap)
{
    if (c->tls && (!c->tls_cert[0] || !c->tls_key[0])) {
        snprintf(err, errcap, "tls is on but tls_cert or tls_key is not set "
                              "(set tls = off only behind a TLS-terminating proxy)");
        return EMS_ECONFIG;
    }
    ems_log_level_t lv;
    if (ems_log_level_parse(c->log_level, &lv)) {
        snprintf(err, errcap, "log_level: '%s' is not error, warn, info or debug", c->log_level);
        return EMS_ECONFIG;
    }
    if (c->idle_timeout_s <= c->ping_interval_s) {
        snprintf(err, errcap, "idle_timeout_s must be longer than ping_interval_s");
        return EMS_ECONFIG;
    }
    if (c->link_batch > c->link_ring) {
        snprintf(err, errcap, "link_batch must not exceed link_ring");
        return EMS_ECONFIG;
    }
    /* The URL may hold a password: errors name only what is wrong. */
    bool nats_tls = strncmp(c->nats_url, "tls://", 6) == 0;
    if (c->nats_url[0] && strncmp(c->nats_url, "nats://", 7) != 0 && !nats_tls) {
        snprintf(err, errcap, "nats_url must be nats://[USER:PASSWORD@]HOST:PORT or tls://...");
        return EMS_ECONFIG;
    }
    if (nats_tls && !c->nats_ca_file[0]) {
        snprintf(err, errcap, "nats_url is tls://: set nats_ca_file to the CA of the NATS "
                              "server's certificate");
        return EMS_ECONFIG;
    }
    /* A gateway claims a webhook's outbox before each attempt; the attempt
     * must end within the claim, or another gateway could deliver the same
     * event at the same time (docs/alarms.md). */
    if (c->alarm_webhook_timeout_ms >= c->alarm_webhook_lease_s * 1000) {
        snprintf(err, errcap,
                 "alarm_webhook_timeout_ms must be shorter than alarm_webhook_lease_s");
        return EMS_ECONFIG;
    }
    /* The zone itself is resolved by PostgreSQL (its tz database); an
     * unknown name makes every energy query fail with its message. Here
     * only the shape of an IANA name: Area/Location, letters, digits and
     * "_+-/", no "..". */
    bool tz_ok = c->energy_time_zone[0] && c->energy_time_zone[0] != '/' &&
                 !strstr(c->energy_time_zone, "..");
    for (const char *p = c->energy_time_zone; tz_ok && *p; p++)
        tz_ok = isalnum((unsigned char)*p) || strchr("_+-/", *p);
    if (!tz_ok) {
        snprintf(err, errcap, "energy_time_zone: '%s' is not a time zone name like Europe/Berlin",
                 c->energy_time_zone);
        return EMS_ECONFIG;
    }
    for (const char *p = c->gateway_id; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == ':')) {
            snprintf(err, errcap, "gateway_id: only letters, digits, '_', '-' and ':'");
            return EMS_ECONFIG;
        }
    }
    if (!c->listen[0]) {
        snprintf(err, errcap, "listen is empty");
        return EMS_ECONFIG;
    }
    return 0;
}
