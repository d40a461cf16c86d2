/* telemetry.h: the upstream telemetry packet (edge -> cloud -> dashboard).
 *
 * The seed's packet (spec "Upstream Payload") plus optional extensions, all
 * listed in docs/protocol.md and proto-schemas/telemetry.schema.json:
 *   seq                       per-device sequence number, survives restarts
 *   clock_synced              false when the edge's clock was not trusted
 *   backfill                  true when the packet is sent from the backlog
 *   backlog                   packets still waiting in the edge's buffer
 *   system_status.target_mode AUTO | MANUAL_CHARGE | MANUAL_DISCHARGE | MANUAL_IDLE
 *   system_status.target_power watts asked for by the active manual mode
 *   battery.temperature       degrees Celsius
 *   energy                    the edge's energy counters in Wh and the start
 *                             of their series (all five members or none)
 * system_status.wifi_strength is an integer dBm, or null when the device has
 * no wireless interface.
 *
 * The struct is plain data with fixed-size strings, so it can be copied,
 * queued and compared without allocation. Each optional field has a has_*
 * flag; an absent field is encoded as absent, never as a default.
 */
#ifndef EMS_TELEMETRY_H
#define EMS_TELEMETRY_H

#include "status.h"
#include "valid.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EMS_DEVICE_ID_MAX 64       /* [A-Za-z0-9_.-]{1,64} */
#define EMS_SEQ_MAX 9007199254740991ULL /* 2^53-1: exact in every JSON reader */
#define EMS_TELEMETRY_JSON_MAX 1024 /* an encoded packet always fits */
#define EMS_ENERGY_WH_MAX 1e12      /* an energy counter, Wh (1 TWh) */

typedef struct {
    char device_id[EMS_DEVICE_ID_MAX + 1];
    int64_t timestamp_ms; /* UTC, milliseconds since the Unix epoch */

    /* system_status */
    ems_state_t state;
    ems_mode_t mode;
    uint32_t error_flags; /* ems_fault_t bits */
    bool has_wifi_strength; /* false: null on the wire (no wireless interface) */
    int wifi_strength;      /* dBm, -127..0 */
    bool has_target_mode;
    ems_target_mode_t target_mode;
    bool has_target_power;
    double target_power; /* W, >= 0 */

    /* battery; current > 0 means charging (spec) */
    double battery_voltage; /* V */
    double battery_current; /* A */
    double battery_power;   /* W, > 0 charging */
    double battery_soc;     /* %, 0..100 */
    bool has_battery_temperature;
    double battery_temperature; /* degrees C */

    /* grid; power < 0 means exporting (selling) */
    double grid_voltage;   /* V */
    double grid_power;     /* W */
    double grid_frequency; /* Hz */

    /* delivery extensions (docs/protocol.md, "Delivery") */
    bool has_seq;
    uint64_t seq; /* 0..EMS_SEQ_MAX */
    bool has_clock_synced;
    bool clock_synced;
    bool has_backfill;
    bool backfill;
    bool has_backlog;
    uint64_t backlog;

    /* energy (optional, docs/protocol.md 2.1): monotonic counters in Wh,
     * 0..EMS_ENERGY_WH_MAX, within the series that began at since_ms */
    bool has_energy;
    double energy_battery_charged_wh;    /* battery.power > 0 */
    double energy_battery_discharged_wh; /* battery.power < 0 */
    double energy_grid_import_wh;        /* grid.power > 0 */
    double energy_grid_export_wh;        /* grid.power < 0 */
    int64_t energy_since_ms;             /* UTC ms */
} ems_telemetry_t;

/* Decodes and validates one packet from a JSON text of `len` bytes (need not
 * be NUL-terminated). Returns 0, or EMS_EINVAL with `err` naming the JSON
 * path and the reason ("battery.soc: 101 is above the maximum 100").
 * Unknown members are ignored (forward compatibility, docs/protocol.md). */
int ems_telemetry_decode(const char *json, size_t len, ems_telemetry_t *out, ems_verr_t *err);

/* The fast path for the common packet (telemetry_scan.c): decodes `len`
 * bytes in one pass, without a jansson tree or any allocation. It only ever
 * accepts what ems_telemetry_decode accepts, with an identical struct.
 * Returns 0, or EMS_EAGAIN for "not handled here": any error, an unknown or
 * repeated member, an escape or non-ASCII byte in a string, a number strtod
 * would over- or underflow, another message. Then `out` is unspecified and
 * the caller decodes with the full decoder, which gives the verdict and the
 * error. Never returns EMS_EINVAL. */
int ems_telemetry_scan(const char *json, size_t len, ems_telemetry_t *out);

/* The same from an already parsed object (borrowed, not modified). */
int ems_telemetry_from_json(const json_t *obj, ems_telemetry_t *out, ems_verr_t *err);

/* Checks a struct against the same rules the decoder applies (ranges, NaN,
 * device id syntax). Returns 0 or EMS_EINVAL with `err` set. */
int ems_telemetry_check(const ems_telemetry_t *t, ems_verr_t *err);

/* Encodes into `buf` (capacity `cap`, NUL-terminated) without allocating.
 * Numbers use the shortest text that reads back to the same double, so
 * decode(encode(x)) == x. Returns the length, EMS_EINVAL if the struct does
 * not pass ems_telemetry_check, or EMS_ENOSPC if `cap` is too small
 * (EMS_TELEMETRY_JSON_MAX always suffices). */
int ems_telemetry_encode(const ems_telemetry_t *t, char *buf, size_t cap);

/* A new jansson object for the packet (caller owns the reference), or NULL
 * on allocation failure or an invalid struct. */
json_t *ems_telemetry_to_json(const ems_telemetry_t *t);

/* True when both packets carry the same fields and values (bitwise for
 * doubles), used by tests and by the edge's duplicate check. */
bool ems_telemetry_equal(const ems_telemetry_t *a, const ems_telemetry_t *b);

/* Checks a device id: 1..64 of [A-Za-z0-9_.-]. */
bool ems_device_id_valid(const char *id, size_t len);

#endif
