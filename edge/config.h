/* config.h: the edge daemon's configuration (file + command line).
 *
 * One file of `key = value` lines (edge/ems-edge.conf.example documents
 * every key):
 *   - blank lines and lines whose first non-blank character is '#' are
 *     comments; a '#' preceded by a blank also starts a comment at the end
 *     of a line, so a value cannot contain " #" unless it is quoted;
 *   - a value may be wrapped in double quotes to keep blanks or '#' (no
 *     escapes inside);
 *   - keys are lower case; an unknown key, a key set twice, an empty or
 *     malformed value, or a number outside its range is refused.
 * Every error reads "FILE:LINE: reason". Rules that involve several keys
 * (soc_min below soc_max, ws:// only with allow_insecure_ws, ...) are checked
 * after the file and the flags are in and read "FILE: reason".
 *
 * Command-line flags override the file (ems_edge_config_from_args):
 *   -c, --config FILE   read FILE first (without it only flags and defaults)
 *   -s, --set KEY=VALUE set any key of the file
 *   --sim               backend = sim
 *   --profile NAME      plant_profile      --seed N      plant_seed
 *   --device-id ID      device_id          --url URL     cloud_url
 *   --token-file PATH   token_file         --ca-file PATH ca_file
 *   --insecure-ws       allow_insecure_ws = true
 *   --log-level LEVEL   log_level          --buffer PATH buffer_path
 *   --status-port N     status_port        --status-bind ADDR status_bind
 *   --check             validate and exit  -h, --help     -V, --version
 *   --probe             read every configured chip once, print, exit
 *                       (needs backend = hw; identity keys not required)
 * Flags take their value as the next argument or after '='.
 *
 * All of it is plain parsing with no side effects, so it runs in tests
 * without main and again on SIGHUP.
 */
#ifndef EMS_EDGE_CONFIG_H
#define EMS_EDGE_CONFIG_H

#include "fsm.h"
#include "hwio.h"
#include "log.h"
#include "plant.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_EDGE_PATH_MAX 512
#define EMS_EDGE_URL_MAX 512
#define EMS_EDGE_CONFIG_FILE_MAX (1 << 20) /* a config file larger than 1 MiB is refused */

typedef enum {
    EMS_EDGE_BACKEND_SIM = 0, /* the simulated plant (edge/plant.h) */
    EMS_EDGE_BACKEND_HW,      /* the chips of docs/hardware.md (edge/hw/hwio.h) */
} ems_edge_backend_t;

/* The plant keys of the file; NAN (or has_seed false) means "the profile's
 * default", so plant_profile may appear anywhere in the file. */
typedef struct {
    ems_plant_profile_t profile;
    bool has_seed;
    uint64_t seed;
    double start_tod_s;
    double soc;
    double capacity_kwh;
    double pv_peak_w;
    double ambient_c;
    double thermal_tau_s;
    double fault_at_s;
} ems_edge_plant_keys_t;

typedef struct {
    /* identity and cloud link */
    char device_id[65];
    char cloud_url[EMS_EDGE_URL_MAX];   /* wss://HOST[:PORT]/ws/device/{id}, or ws:// */
    char token_file[EMS_EDGE_PATH_MAX]; /* file holding the 64-hex device token */
    char ca_file[EMS_EDGE_PATH_MAX];    /* PEM CA bundle the server cert must chain to */
    bool allow_insecure_ws;             /* required for a ws:// URL */

    /* control */
    ems_fsm_limits_t limits;

    /* back end */
    ems_edge_backend_t backend;
    ems_edge_plant_keys_t plant;
    ems_hw_config_t hw; /* backend = hw */

    /* telemetry buffer (edge/store.h) */
    char buffer_path[EMS_EDGE_PATH_MAX];
    uint64_t buffer_max_bytes;      /* buffer_max_mb */
    int64_t buffer_max_age_ms;      /* buffer_max_age_days; 0 = never */
    uint64_t buffer_min_free_bytes; /* buffer_min_free_mb */
    ems_store_sync_t buffer_sync;   /* off | normal | full */
    uint32_t buffer_commit_interval_ms;

    /* daemon */
    ems_log_level_t log_level;
    int status_port;                   /* local HTTP status endpoint; 0 = off */
    char status_bind[64];              /* its address, 127.0.0.1 by default */
    char wifi_path[EMS_EDGE_PATH_MAX]; /* /proc/net/wireless */

    /* cloud link tuning (docs/edge-daemon.md) */
    int64_t ws_ping_ms;           /* ws_ping_s: ping after this much silence; 5 s */
    int64_t ws_timeout_ms;        /* ws_timeout_s: the link is dead after this much silence; 15 s */
    int64_t reconnect_min_ms;     /* reconnect_min_s: first backoff ceiling; 1 s */
    int64_t reconnect_max_ms;     /* reconnect_max_s: largest backoff ceiling; 60 s */
    int64_t ack_timeout_ms;       /* ack_timeout_s: sent but unacked this long -> resend; 60 s */
    int backfill_batch;           /* packets per telemetry_batch, 1..100; 100 */
    int64_t backfill_interval_ms; /* between two batches; 200 ms */
    int backfill_inflight;        /* unacknowledged batches at most; 4 */

    /* simulation and tests */
    double sim_speed; /* plant_speed: simulated seconds per real second; 1 */
    bool sim_control; /* POST /sim/... on the status endpoint (loopback peers, sim only) */
    int64_t tick_ms;  /* TEST ONLY: the tick period; 1000 */

    /* what the command line asked for besides settings */
    bool show_help;
    bool show_version;
    bool check_only;
    bool probe_only; /* --probe: read every chip once and exit */

    /* where each value came from, for error messages */
    char source[EMS_EDGE_PATH_MAX]; /* the config file, or "" */
    int key_line[160];              /* per key: file line, -1 flag, 0 default */
} ems_edge_config_t;

/* Fills every default. device_id, cloud_url and token_file have none. */
void ems_edge_config_default(ems_edge_config_t *cfg);

/* Sets one key from text, as a file line would. `where` prefixes the error
 * ("FILE:LINE" or "--set"); `line` is recorded for later messages (-1 for
 * the command line). Returns 0 or EMS_ECONFIG with "WHERE: reason" in err. */
int ems_edge_config_set(ems_edge_config_t *cfg, const char *key, const char *value,
                        const char *where, int line, char *err, size_t cap);

/* Applies the lines of a config text of `len` bytes named `name` (for the
 * messages) on top of *cfg. Stops at the first bad line. Returns 0 or
 * EMS_ECONFIG with "NAME:LINE: reason" in err. */
int ems_edge_config_parse(ems_edge_config_t *cfg, const char *text, size_t len, const char *name,
                          char *err, size_t cap);

/* Reads and applies the file at `path`. EMS_ECONFIG also when the file cannot
 * be read ("PATH: No such file or directory"). */
int ems_edge_config_load(ems_edge_config_t *cfg, const char *path, char *err, size_t cap);

/* The rules between keys and the required keys. 0 or EMS_ECONFIG. */
int ems_edge_config_check(const ems_edge_config_t *cfg, char *err, size_t cap);

/* The whole start-up path: defaults, then --config FILE, then every other
 * flag in order, then ems_edge_config_check (skipped for --help/--version).
 * argv[0] is the program name. Returns 0 or EMS_ECONFIG with err set. */
int ems_edge_config_from_args(ems_edge_config_t *cfg, int argc, char *const argv[], char *err,
                              size_t cap);

/* The usage text for --help (static). */
const char *ems_edge_config_usage(void);

/* The plant configuration the keys describe (profile defaults + keys). */
void ems_edge_config_plant(const ems_edge_config_t *cfg, ems_plant_config_t *out);

/* Where the WebSocket goes: cloud_url split, with the device path added. */
typedef struct {
    bool tls;                         /* wss:// */
    char host[256];                   /* name or IP literal, without brackets */
    int port;                         /* from the URL, else 443 (wss) or 80 (ws) */
    char path[EMS_EDGE_URL_MAX + 80]; /* request path: PREFIX/ws/device/{device_id} */
} ems_edge_ws_target_t;

/* Splits cloud_url. The URL is the gateway's base ("wss://ems.example.com",
 * maybe with a path prefix for a proxy, "wss://example.com/ems"); the
 * device path /ws/device/{device_id} is appended. A URL that already ends in
 * "/ws/device/{device_id}" is taken as it is. IPv6 literals go in brackets
 * ("wss://[::1]:8443"). Query strings and user info are refused. Returns 0
 * or EMS_EINVAL with the reason in err. */
int ems_edge_config_ws_target(const char *url, const char *device_id, ems_edge_ws_target_t *out,
                              char *err, size_t cap);

/* Reads the device token from `path`: 64 hex characters, surrounding blanks
 * and one trailing newline allowed. Writes it NUL-terminated into token
 * (capacity at least 65). Returns 0, EMS_EIO when the file cannot be read,
 * or EMS_EINVAL when it does not hold a token; err says which. */
int ems_edge_config_read_token(const char *path, char *token, size_t cap, char *err,
                               size_t err_cap);

#endif
