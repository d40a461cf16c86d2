/* status.h: the vocabulary shared by the edge's state machine, the wire
 * messages and the cloud: battery states, modes, target modes and fault
 * flags, with their wire names.
 *
 * The wire names are the contract (docs/protocol.md, proto-schemas/); the
 * numeric values are internal and may change. *_name() returns a static
 * string; *_parse() returns 0 or EMS_EINVAL and leaves *out alone on error.
 */
#ifndef EMS_STATUS_H
#define EMS_STATUS_H

#include <stdint.h>

/* system_status.state: the state of the battery state machine
 * (docs/state-machine.md). */
typedef enum {
    EMS_STATE_IDLE = 0,
    EMS_STATE_CHARGING,
    EMS_STATE_DISCHARGING,
    EMS_STATE_FULL,  /* at the top of the SoC window; charging is paused */
    EMS_STATE_EMPTY, /* at the bottom of the SoC window; discharging is paused */
    EMS_STATE_ERROR, /* a fault latched; outputs are off until RESET_ERROR */
    EMS_STATE_COUNT
} ems_state_t;

/* system_status.mode, as the seed defines it: AUTO or MANUAL. */
typedef enum {
    EMS_MODE_AUTO = 0,
    EMS_MODE_MANUAL,
    EMS_MODE_COUNT
} ems_mode_t;

/* SET_MODE payload.target_mode; also reported as the optional
 * system_status.target_mode so the cloud knows which manual mode is active. */
typedef enum {
    EMS_TARGET_AUTO = 0,
    EMS_TARGET_MANUAL_CHARGE,
    EMS_TARGET_MANUAL_DISCHARGE,
    EMS_TARGET_MANUAL_IDLE,
    EMS_TARGET_COUNT
} ems_target_mode_t;

/* system_status.error_flags: one bit per fault; on the wire a list of names
 * in the order of the bits, each at most once. */
typedef enum {
    EMS_FAULT_OVERHEAT = 1u << 0,
    EMS_FAULT_UNDERTEMP = 1u << 1,
    EMS_FAULT_OVERVOLTAGE = 1u << 2,
    EMS_FAULT_UNDERVOLTAGE = 1u << 3,
    EMS_FAULT_OVERCURRENT = 1u << 4,
    EMS_FAULT_SENSOR_FAULT = 1u << 5,
    EMS_FAULT_GRID_FAULT = 1u << 6,
} ems_fault_t;
#define EMS_FAULT_COUNT 7
#define EMS_FAULT_ALL ((1u << EMS_FAULT_COUNT) - 1u)

const char *ems_state_name(ems_state_t s);
int ems_state_parse(const char *s, ems_state_t *out);

const char *ems_mode_name(ems_mode_t m);
int ems_mode_parse(const char *s, ems_mode_t *out);

const char *ems_target_mode_name(ems_target_mode_t t);
int ems_target_mode_parse(const char *s, ems_target_mode_t *out);
/* The seed's two-valued mode that a target mode implies (AUTO or MANUAL). */
ems_mode_t ems_target_mode_to_mode(ems_target_mode_t t);

/* Name of a single fault bit (e.g. "OVERHEAT"); NULL if `bit` is not exactly
 * one known bit. */
const char *ems_fault_name(uint32_t bit);
/* Parses one fault name to its bit. */
int ems_fault_parse(const char *s, uint32_t *bit_out);

#endif
