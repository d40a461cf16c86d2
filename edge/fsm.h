/* fsm.h: the battery state machine of the edge (docs/state-machine.md).
 *
 * Pure logic: no I/O, no clock reads, no allocation. Once per tick the daemon
 * reads the sensors (edge/io.h), calls ems_fsm_step() with the sample and the
 * monotonic time, and hands the returned setpoint to the actuator. Safety
 * comes first inside the step: any active fault moves the machine to ERROR
 * and the setpoint to 0 W in the same tick, before the strategy runs.
 *
 * States (common/status.h): IDLE, CHARGING, DISCHARGING, FULL, EMPTY, ERROR.
 * Target modes: AUTO (self-consumption), MANUAL_CHARGE, MANUAL_DISCHARGE
 * (both with a power in W), MANUAL_IDLE. The setpoint is the battery power
 * at the terminals in W, positive = charge.
 *
 * The machine does not validate commands; edge/cmd.h does that (limits,
 * reason codes, idempotence) and then calls ems_fsm_set_mode() or
 * ems_fsm_reset_error(), which only enforce what keeps the machine sound.
 */
#ifndef EMS_FSM_H
#define EMS_FSM_H

#include "io.h"
#include "status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every limit and threshold of the machine. Defaults (ems_fsm_limits_default)
 * suit a 16-cell 48 V LFP pack with a 5 kW inverter; the config file
 * overrides each (edge/ems-edge.conf.example lists them). */
typedef struct {
    /* SoC window, percent; FULL at soc >= soc_max until soc < soc_max -
     * soc_hysteresis, EMPTY at soc <= soc_min until soc > soc_min +
     * soc_hysteresis. */
    double soc_min;        /* 10 */
    double soc_max;        /* 95 */
    double soc_hysteresis; /* 3 */

    /* Power limits at the battery terminals, W (both positive numbers). */
    double max_charge_w;    /* 5000 */
    double max_discharge_w; /* 5000 */
    /* AUTO ignores an imbalance smaller than this (W) so the battery does
     * not chase meter noise; once running it stops only below half of it. */
    double auto_deadband_w; /* 50 */

    /* Battery faults. Each trips when the reading passes the limit and
     * counts as gone once it is back by the hysteresis. */
    double temp_max_c;           /* 55: OVERHEAT above */
    double temp_min_c;           /* 0: UNDERTEMP below (LFP must not charge) */
    double temp_hysteresis_c;    /* 5 */
    double voltage_max_v;        /* 58.4 = 16 x 3.65 V: OVERVOLTAGE above */
    double voltage_min_v;        /* 42.0 = 16 x 2.625 V: UNDERVOLTAGE below */
    double voltage_hysteresis_v; /* 0.5 */
    double current_max_a;        /* 120: OVERCURRENT when |I| is above */
    double current_hysteresis_a; /* 5 */

    /* Grid faults: voltage or frequency outside the window for
     * grid_fault_ticks consecutive samples. */
    double grid_voltage_min_v; /* 196 (230 V - 15 %) */
    double grid_voltage_max_v; /* 253 (230 V + 10 %) */
    double grid_freq_min_hz;   /* 47.5 */
    double grid_freq_max_hz;   /* 51.5 */
    int grid_fault_ticks;      /* 3 */

    /* Sensor faults: a group older than stale_ms, a value that is not
     * finite or is outside the physical ranges below, or a battery power
     * that disagrees with V x I by more than max(power_tolerance_w,
     * power_tolerance_frac x |V x I|). */
    int64_t stale_ms;               /* 3000 */
    double power_tolerance_w;       /* 50 */
    double power_tolerance_frac;    /* 0.05 */
    double plausible_voltage_min_v; /* 20: a 48 V pack never reads less */
    double plausible_voltage_max_v; /* 80 */
    double plausible_temp_min_c;    /* -40 */
    double plausible_temp_max_c;    /* 125 */

    /* Cloud-loss policy: a manual mode reverts to AUTO after this long
     * without a cloud connection; 0 = never. */
    int64_t manual_timeout_ms; /* 3600000 */
} ems_fsm_limits_t;

/* Fills the defaults above. */
void ems_fsm_limits_default(ems_fsm_limits_t *l);

/* Checks that the limits make sense together (soc_min < soc_max - hysteresis,
 * positive powers, min < max for every window...). Returns 0, or EMS_EINVAL
 * with a sentence in `why` (capacity `cap`) naming the keys involved. */
int ems_fsm_limits_check(const ems_fsm_limits_t *l, char *why, size_t cap);

/* What the machine gets each tick. */
typedef struct {
    ems_io_sample_t sample;
    bool cloud_connected; /* the WebSocket is up (for the cloud-loss policy) */
} ems_fsm_input_t;

/* What the machine decides each tick. */
typedef struct {
    ems_state_t state;
    ems_mode_t mode; /* AUTO or MANUAL, from target_mode */
    ems_target_mode_t target_mode;
    double target_power;    /* W >= 0; meaningful for MANUAL_CHARGE/DISCHARGE */
    double setpoint_w;      /* battery power command, + = charge; 0 in ERROR */
    uint32_t error_flags;   /* faults latched since ERROR began | active now */
    uint32_t active_faults; /* fault conditions present in this sample */
    /* Events of this tick, for logging and command completion. */
    bool state_changed;
    bool entered_error;
    bool reverted_to_auto; /* the cloud-loss policy ended a manual mode */
} ems_fsm_output_t;

/* The machine. Plain data owned by the caller; no teardown needed. Read it
 * through the accessors below; fields are private. */
typedef struct {
    ems_fsm_limits_t lim;
    ems_state_t state;
    ems_target_mode_t target;
    double target_power;
    uint32_t active;  /* fault conditions with their hysteresis */
    uint32_t latched; /* faults seen since ERROR was entered */
    int grid_bad_ticks;
    bool full, empty; /* SoC window flags with hysteresis */
    bool have_soc;
    double last_soc;
    int64_t cloud_lost_ms; /* when the link went down; -1 while connected */
    uint64_t mode_gen;     /* bumped by every set_mode/reset (command completion) */
    uint64_t applied_gen;  /* mode_gen that the last step ran with */
} ems_fsm_t;

/* Starts the machine in IDLE, target mode AUTO, no faults. `lim` is copied. */
void ems_fsm_init(ems_fsm_t *f, const ems_fsm_limits_t *lim);

/* Replaces the limits (config reload). Takes effect at the next step; the
 * state, mode and latched faults are kept. */
void ems_fsm_set_limits(ems_fsm_t *f, const ems_fsm_limits_t *lim);

/* One tick: evaluates faults, then the strategy of the active mode, and
 * fills *out. `now_ms` is monotonic time in ms and must not go backwards.
 * Never fails. */
void ems_fsm_step(ems_fsm_t *f, const ems_fsm_input_t *in, int64_t now_ms, ems_fsm_output_t *out);

/* Switches the target mode; `power_w` (>= 0) is used by MANUAL_CHARGE and
 * MANUAL_DISCHARGE and ignored otherwise. Returns EMS_EPERM in ERROR and
 * EMS_EINVAL for a negative or non-finite power or an unknown mode; all the
 * other checks (limits, SoC) belong to edge/cmd.h. Takes effect at the next
 * step; returns the generation number ems_fsm_applied() reports once it has. */
int ems_fsm_set_mode(ems_fsm_t *f, ems_target_mode_t mode, double power_w, uint64_t *gen_out);

/* Leaves ERROR if no fault condition is active. Returns 0 (the machine is
 * back in target mode AUTO from the next step on), EMS_EPERM if not in ERROR, or EMS_EAGAIN
 * with *active_out set to the active fault bits. The conditions are those of
 * the last step's sample. `gen_out` as for ems_fsm_set_mode (may be NULL). */
int ems_fsm_reset_error(ems_fsm_t *f, uint32_t *active_out, uint64_t *gen_out);

/* Puts the machine in ERROR with `flags` latched, as it was before a
 * restart (edge/state.h). Only RESET_ERROR leaves it, as for any latch;
 * flags may be 0 when the saved state could not be read (fail-safe). */
void ems_fsm_restore_error(ems_fsm_t *f, uint32_t flags);

/* True once a step has run with generation `gen` (or a later one). */
bool ems_fsm_applied(const ems_fsm_t *f, uint64_t gen);

/* Accessors for command checks and the status endpoint. */
ems_state_t ems_fsm_state(const ems_fsm_t *f);
ems_target_mode_t ems_fsm_target_mode(const ems_fsm_t *f);
double ems_fsm_target_power(const ems_fsm_t *f);
uint32_t ems_fsm_active_faults(const ems_fsm_t *f);
const ems_fsm_limits_t *ems_fsm_limits(const ems_fsm_t *f);
/* The SoC window flags: true while charging (full) or discharging (empty) is
 * blocked by the SoC limit, including the hysteresis band. */
bool ems_fsm_is_full(const ems_fsm_t *f);
bool ems_fsm_is_empty(const ems_fsm_t *f);
/* Last plausible SoC seen (percent), or NAN before the first. */
double ems_fsm_last_soc(const ems_fsm_t *f);

/* Writes the names of the fault bits in `flags` as "OVERHEAT, GRID_FAULT"
 * into buf (capacity cap, always NUL-terminated); "none" when empty. */
const char *ems_fsm_faults_format(uint32_t flags, char *buf, size_t cap);

#endif
