/* cmd.h: applies cloud commands to the state machine, with their results.
 *
 * The daemon decodes a command (common/command.h) and hands it here. Every
 * command gets exactly the results docs/protocol.md section 2.3 defines,
 * through the `emit` callback:
 *   - rejected, with a reason, when it would break a rule (it is never
 *     clamped or adapted silently); nothing changes;
 *   - accepted when it is valid; then, after the next tick has run with it
 *     (ems_edge_cmd_after_tick), completed, or failed when the machine went
 *     to ERROR in between (SET_MODE: IN_ERROR) or the fault came back
 *     (RESET_ERROR: FAULT_ACTIVE).
 * Rules for SET_MODE, checked in this order:
 *   EXPIRED      expires_at is before now (the edge's UTC clock)
 *   IN_ERROR     the machine is in ERROR (RESET_ERROR first)
 *   INVALID      MANUAL_CHARGE / MANUAL_DISCHARGE without target_power, or a
 *                power that is negative or not finite
 *   POWER_LIMIT  target_power above max_charge_w (MANUAL_CHARGE) or
 *                max_discharge_w (MANUAL_DISCHARGE)
 *   SOC_LIMIT    MANUAL_CHARGE while FULL-blocked (SoC >= soc_max, or not yet
 *                below soc_max - soc_hysteresis since), MANUAL_DISCHARGE
 *                while EMPTY-blocked (SoC <= soc_min, likewise)
 * AUTO and MANUAL_IDLE ignore target_power. RESET_ERROR: EXPIRED, then
 * NOT_IN_ERROR outside ERROR, then FAULT_ACTIVE while a fault condition is
 * still present (the message names the faults).
 *
 * Idempotence: the last EMS_EDGE_CMD_HISTORY command ids are remembered with
 * their latest result. A repeated id gets that result again (with the
 * timestamp of the original decision) and is never executed twice, even if
 * its content differs.
 *
 * Nothing here does I/O or reads a clock; times are passed in.
 */
#ifndef EMS_EDGE_CMD_H
#define EMS_EDGE_CMD_H

#include "command.h"
#include "command_result.h"
#include "fsm.h"

#include <stdbool.h>
#include <stdint.h>

#define EMS_EDGE_CMD_HISTORY 64

/* Receives each result; `r` is valid only during the call. Called from
 * inside ems_edge_cmd_* functions, which must not be re-entered from it. */
typedef void (*ems_edge_cmd_emit_fn)(void *ud, const ems_command_result_t *r);

typedef struct {
    bool used;
    bool pending; /* accepted, the completion is still to come */
    ems_action_t action;
    uint64_t gen;              /* fsm generation whose tick completes it */
    ems_command_result_t last; /* the latest result sent */
} ems_edge_cmd_entry_t;

/* Plain data owned by the caller; holds a borrowed pointer to the fsm. */
typedef struct {
    ems_fsm_t *fsm;
    ems_edge_cmd_emit_fn emit;
    void *ud;
    ems_edge_cmd_entry_t hist[EMS_EDGE_CMD_HISTORY];
    unsigned next;                             /* ring position for the next new id */
    char last_mode_id[EMS_COMMAND_ID_MAX + 1]; /* the SET_MODE that set the mode */
} ems_edge_cmd_t;

/* `fsm` must outlive `c`. */
void ems_edge_cmd_init(ems_edge_cmd_t *c, ems_fsm_t *fsm, ems_edge_cmd_emit_fn emit, void *ud);

/* Handles one decoded, schema-valid command at UTC time `now_utc_ms`: emits
 * one result (accepted or rejected, or the stored result of a repeated id). */
void ems_edge_cmd_handle(ems_edge_cmd_t *c, const ems_command_t *cmd, int64_t now_utc_ms);

/* Answers a command that could not be decoded but whose command_id was
 * readable: rejected with `reason` (INVALID, or UNSUPPORTED for an unknown
 * action) and `message`. A known id gets its stored result instead. The
 * rejection is not remembered, so it cannot evict a real command. */
void ems_edge_cmd_reject(ems_edge_cmd_t *c, const char *command_id, ems_result_reason_t reason,
                         const char *message, int64_t now_utc_ms);

/* Call after every ems_fsm_step once its setpoint went to the actuator:
 * emits completed or failed for the commands that tick settled. */
void ems_edge_cmd_after_tick(ems_edge_cmd_t *c, const ems_fsm_output_t *out, int64_t now_utc_ms);

/* The stored latest result of `command_id`, or NULL if it is not remembered. */
const ems_command_result_t *ems_edge_cmd_lookup(const ems_edge_cmd_t *c, const char *command_id);

#endif
