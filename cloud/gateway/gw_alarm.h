/* gw_alarm.h: the alarm rules, evaluated on live data (docs/alarms.md).
 *
 * Pure logic, no I/O: the caller feeds each live packet of a device
 * (gw_alarm_packet), tells it when the device connects and ticks it while
 * the device is offline (gw_alarm_connected, gw_alarm_offline); the engine
 * answers through the `emit` callback with "raise" or "clear" of one rule.
 * The caller turns those into durable link EVENTs (alarm_raise,
 * alarm_clear); the database keeps at most one open alarm per (device,
 * rule), so a raise that another gateway already made is a no-op there.
 *
 * Rules:
 *   error         the device reports state ERROR (details: its error flags)
 *   sensor_fault  the device reports the SENSOR_FAULT flag
 *   soc_low       battery SoC below soc_low; clears above soc_low + soc_hyst
 *                 (between the two nothing changes: hysteresis)
 *   offline       disconnected for offline_ms; clears when it connects
 *
 * Debounce: a live rule raises only after its condition held (in every
 * packet) for debounce_ms, and clears only after the opposite held for
 * debounce_ms, so a value flapping faster than that changes nothing.
 *
 * A device's rules start UNKNOWN (this gateway has just started, or the
 * device has just moved here from another gateway). When it connects, the
 * caller asks the database which of its alarms are open and tells the
 * engine (gw_alarm_sync), so an alarm that an earlier gateway raised is
 * cleared here when its condition is gone, without an event per rule for
 * every device that connects.
 */
#ifndef GW_ALARM_H
#define GW_ALARM_H

#include "telemetry.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    GW_ALARM_ERROR = 0,
    GW_ALARM_SENSOR_FAULT,
    GW_ALARM_SOC_LOW,
    GW_ALARM_OFFLINE,
    GW_ALARM_NRULES
} gw_alarm_rule_t;

typedef enum { GW_ALARM_UNKNOWN = 0, GW_ALARM_CLEAR, GW_ALARM_RAISED } gw_alarm_state_t;

typedef struct {
    int64_t debounce_ms; /* a condition must hold this long; 0: at once */
    double soc_low;      /* percent; <= 0 disables soc_low */
    double soc_hyst;     /* percent above soc_low to clear */
    int64_t offline_ms;  /* 0 disables offline */
} gw_alarm_cfg_t;

/* One device's rule states; zero-initialised means every rule UNKNOWN. */
typedef struct {
    uint8_t state[GW_ALARM_NRULES];      /* gw_alarm_state_t */
    int64_t pending_ms[GW_ALARM_NRULES]; /* since when the opposite holds; 0 none */
} gw_alarm_dev_t;

/* What the engine decided. `message` is a short text for people; `details`
 * a JSON object text (e.g. {"error_flags":["OVERHEAT"]}), both valid only
 * during the call. `since_ms` is the start of the condition (the disconnect
 * for offline). */
typedef struct {
    const char *device_id;
    gw_alarm_rule_t rule;
    bool raise; /* false: clear */
    int64_t at_ms;
    int64_t since_ms;
    const char *message;
    const char *details;
} gw_alarm_change_t;

/* Returns true when the change was taken (queued durably for the
 * database); false makes the engine try again at the next evaluation. */
typedef bool (*gw_alarm_emit_fn)(void *ud, const gw_alarm_change_t *c);

/* "error", "sensor_fault", "soc_low", "offline". */
const char *gw_alarm_rule_name(gw_alarm_rule_t r);

/* The defaults: debounce 10 s, SoC low 10 % with 5 % hysteresis, offline
 * 300 s. */
void gw_alarm_cfg_default(gw_alarm_cfg_t *c);

/* One live packet of the device at wall clock now_ms: evaluates error,
 * sensor_fault and soc_low. */
void gw_alarm_packet(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const ems_telemetry_t *t,
                     int64_t now_ms, gw_alarm_emit_fn emit, void *ud);

/* The device connected here: clears offline if this gateway raised it
 * (an unknown one is settled by gw_alarm_sync). */
void gw_alarm_connected(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const char *device_id,
                        int64_t now_ms, gw_alarm_emit_fn emit, void *ud);

/* The device has been offline since offline_since_ms (wall clock); raises
 * offline once offline_ms have passed. Call from a periodic tick. */
void gw_alarm_offline(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const char *device_id,
                      int64_t offline_since_ms, int64_t now_ms, gw_alarm_emit_fn emit, void *ud);

/* The database's answer for a device connected here: `open_mask` has bit
 * (1 << rule) for each rule with an open alarm. An UNKNOWN rule takes that
 * state; an open offline alarm is cleared (the device is here); an open
 * alarm whose condition this gateway already found gone is cleared. */
void gw_alarm_sync(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const char *device_id,
                   unsigned open_mask, int64_t now_ms, gw_alarm_emit_fn emit, void *ud);

/* Forgets the live rules' pending conditions (not their states): called
 * when the device disconnects, so a debounce never spans a gap. */
void gw_alarm_disconnected(gw_alarm_dev_t *d);

#endif
