/* gw_config.h: the gateway's settings, from a file and from flags.
 *
 * The file has one `key = value` per line; `#` starts a comment; blank lines
 * are ignored; an unknown key or a bad value is an error naming the line.
 * Every key can also be given as a flag, `--key=value` or `--key value`,
 * which wins over the file. `-c FILE` / `--config FILE` names the file.
 * Defaults are the values of gw_config_defaults(); docs/operations.md lists
 * them (gw_config_usage prints the same table).
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GW_PATH_MAX 512

/* Acks held back by ack_delay_ms wait on a wheel of GW_ACK_SLOT_MS slots
 * (gw_device.c); the wheel spans the longest delay. */
#define GW_ACK_SLOT_MS 50
#define GW_ACK_DELAY_MAX_MS 30000
#define GW_ACK_SLOTS (GW_ACK_DELAY_MAX_MS / GW_ACK_SLOT_MS + 2)

typedef struct {
    char listen[128];         /* HOST:PORT, [V6]:PORT; port 0 picks one */
    bool tls;                 /* false only behind a TLS-terminating proxy */
    char tls_cert[GW_PATH_MAX];
    char tls_key[GW_PATH_MAX];
    char origins[GW_PATH_MAX]; /* allowed Origins, comma-separated; empty: the Host's own */
    char dbwriter_socket[GW_PATH_MAX];
    char session_key_file[GW_PATH_MAX]; /* empty: a random key per start */
    char static_dir[GW_PATH_MAX];
    char port_file[GW_PATH_MAX]; /* if set, the bound port is written there */
    char log_level[16];
    bool reuseport;
    char nats_url[GW_PATH_MAX];  /* empty: no message bus (one gateway alone) */
    char nats_ca_file[GW_PATH_MAX];     /* tls:// bus: CA of the NATS server's certificate */
    char nats_tls_hostname[256];        /* tls:// bus: name to check it against (default: the URL's host) */
    char gateway_id[96];         /* id on the bus; empty: host:pid */

    int64_t max_connections;
    int64_t device_max_message;    /* bytes */
    int64_t dashboard_max_message; /* bytes */
    int64_t http_max_body;         /* bytes */
    int64_t handshake_timeout_ms;
    int64_t ping_interval_s;
    int64_t idle_timeout_s;
    int64_t device_send_queue;    /* bytes queued before a device is cut off */
    int64_t dashboard_send_queue; /* bytes queued before a dashboard is dropped (4009) */
    int64_t fleet_interval_ms;    /* the fleet view: at most one update per device this often */
    int64_t ack_delay_ms;         /* at most one ack message per device this often (0: at once) */
    int64_t ack_batch;            /* ...unless this many committed seqs wait for it */
    int64_t rate_burst;           /* messages */
    int64_t rate_per_s;           /* messages per second, sustained */
    int64_t command_timeout_s;    /* sent -> no answer */
    int64_t command_complete_s;   /* accepted -> not completed */
    int64_t auth_cache_s;         /* device credential cache lifetime */
    int64_t recheck_s;            /* live devices' credentials re-checked this often */
    int64_t link_ring;            /* telemetry records held until the DB commits */
    int64_t link_batch;           /* records per TELEMETRY frame */
    int64_t link_flush_ms;        /* a partial batch waits at most this long */
    int64_t query_inflight;       /* REST queries at the DB writer at once */
    int64_t query_per_user;       /* one user's REST queries, waiting or running */
    int64_t query_queue;          /* REST queries waiting for the DB writer */
    int64_t login_per_min;        /* failed logins per client address per minute */
    int64_t max_unauth_per_addr;  /* not-yet-upgraded connections per address (IPv6 /64); 0 off */
    int64_t connection_reserve_pct; /* % of max_connections only upgraded ones may use */
    int64_t handshake_cpu_pct;    /* share of the loop for TLS handshakes */
    int64_t handshake_burst_ms;   /* handshake work allowed in one burst */
    int64_t handshake_admit_ms;   /* accept while queued handshakes fit in this (0: timeout/2) */
    int64_t auth_batch;           /* credential lookups per DB writer query */
    int64_t auth_queue;           /* credential lookups waiting at most */
    int64_t auth_wait_ms;         /* a lookup waits at most this long to be sent */
    int64_t http_output_budget;   /* bytes of queued HTTP answers, all connections */
    int64_t login_hash_workers;   /* password hashes running at once */
    int64_t login_queue;          /* logins waiting for a hash slot at most */
    int64_t auth_negative_s;      /* "unknown device" answers are cached this long */
    int64_t telemetry_max_skew_s;   /* packets further ahead of our clock are refused */
    int64_t telemetry_max_age_days; /* packets older than this are refused */
    /* IANA time zone of the fleet's days and months in the energy API
     * (docs/energy.md), e.g. "Europe/Berlin"; default "UTC". */
    char energy_time_zone[64];
    /* Alarms and their webhooks (docs/alarms.md). */
    int64_t alarm_debounce_s;      /* a live condition must hold this long */
    int64_t alarm_soc_low;         /* percent; 0 disables the soc_low rule */
    int64_t alarm_soc_hysteresis;  /* soc_low clears above soc_low + this */
    int64_t alarm_offline_s;       /* offline this long raises; 0 disables */
    char alarm_webhooks[2048];     /* http(s) URLs, comma-separated; empty: none */
    char alarm_webhook_secret_file[GW_PATH_MAX]; /* HMAC-SHA256 key */
    char alarm_webhook_ca_file[GW_PATH_MAX];     /* CAs for https webhooks */
    int64_t alarm_webhook_retries;     /* attempts before an event is dead-lettered */
    int64_t alarm_webhook_backoff_ms;  /* first retry ceiling (doubles, full jitter) */
    int64_t alarm_webhook_backoff_max_ms;
    int64_t alarm_webhook_timeout_ms;  /* one delivery attempt */
    int64_t alarm_webhook_lease_s;     /* a gateway's claim on a webhook's outbox */
} gw_config_t;

void gw_config_defaults(gw_config_t *c);

/* Applies one setting. Returns 0 or EMS_ECONFIG with a message in err. */
int gw_config_set(gw_config_t *c, const char *key, const char *value, char *err, size_t errcap);

/* Reads a file of settings. Returns 0, EMS_ECONFIG (message names the line)
 * or a negative errno if the file cannot be read. */
int gw_config_load(gw_config_t *c, const char *path, char *err, size_t errcap);

/* Defaults, then the file named by -c/--config (if any), then the other
 * flags. Returns 0, 1 if --help was asked (usage printed), or EMS_ECONFIG. */
int gw_config_from_args(gw_config_t *c, int argc, char **argv, char *err, size_t errcap);

/* Checks the combination (TLS files present when tls is on, ranges).
 * Returns 0 or EMS_ECONFIG. */
int gw_config_check(const gw_config_t *c, char *err, size_t errcap);

void gw_config_usage(FILE *out);

#endif
