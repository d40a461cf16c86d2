/* cmd.c: command rules, results and idempotence (see cmd.h). */
#include "cmd.h"

#include "error.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ems_edge_cmd_init(ems_edge_cmd_t *c, ems_fsm_t *fsm, ems_edge_cmd_emit_fn emit, void *ud)
{
    memset(c, 0, sizeof *c);
    c->fsm = fsm;
    c->emit = emit;
    c->ud = ud;
}

static ems_edge_cmd_entry_t *cmd__find(const ems_edge_cmd_t *c, const char *id)
{
    for (unsigned i = 0; i < EMS_EDGE_CMD_HISTORY; i++) {
        const ems_edge_cmd_entry_t *e = &c->hist[i];
        if (e->used && strcmp(e->last.command_id, id) == 0)
            return (ems_edge_cmd_entry_t *)e;
    }
    return NULL;
}

const ems_command_result_t *ems_edge_cmd_lookup(const ems_edge_cmd_t *c, const char *command_id)
{
    const ems_edge_cmd_entry_t *e = cmd__find(c, command_id);
    return e ? &e->last : NULL;
}

/* A slot for a new id: the oldest one, skipping entries whose completion is
 * still due (they are at most one tick old). NULL when all are pending,
 * which only a flood of commands within one tick can cause. */
static ems_edge_cmd_entry_t *cmd__slot(ems_edge_cmd_t *c)
{
    for (unsigned k = 0; k < EMS_EDGE_CMD_HISTORY; k++) {
        unsigned i = (c->next + k) % EMS_EDGE_CMD_HISTORY;
        if (!c->hist[i].pending) {
            c->next = (i + 1) % EMS_EDGE_CMD_HISTORY;
            return &c->hist[i];
        }
    }
    return NULL;
}

static void cmd__fill(ems_command_result_t *r, const char *id, ems_result_status_t status,
                      int reason, int64_t now_utc_ms, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* reason < 0 means none. fmt NULL means no message. */
static void cmd__fill(ems_command_result_t *r, const char *id, ems_result_status_t status,
                      int reason, int64_t now_utc_ms, const char *fmt, ...)
{
    memset(r, 0, sizeof *r);
    snprintf(r->command_id, sizeof r->command_id, "%s", id);
    r->status = status;
    if (reason >= 0) {
        r->has_reason = true;
        r->reason = (ems_result_reason_t)reason;
    }
    r->timestamp_ms = now_utc_ms;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        /* Our messages are ASCII; cutting at 256 bytes keeps them within
         * the protocol's 256 characters. */
        vsnprintf(r->message, EMS_RESULT_MESSAGE_MAX + 1, fmt, ap);
        va_end(ap);
        r->has_message = true;
    }
}

/* ------------------------------------------------------------- rules */

/* Fills `r` with a rejection if the SET_MODE breaks a rule; returns false
 * when it may be applied. */
static bool cmd__reject_set_mode(const ems_edge_cmd_t *c, const ems_command_t *cmd, int64_t now,
                                 ems_command_result_t *r)
{
    const ems_fsm_t *f = c->fsm;
    const ems_fsm_limits_t *l = ems_fsm_limits(f);
    const char *id = cmd->command_id;
    const char *mode = ems_target_mode_name(cmd->target_mode);
    double p = cmd->target_power;

    if (ems_fsm_state(f) == EMS_STATE_ERROR) {
        char faults[128];
        ems_fsm_faults_format(ems_fsm_active_faults(f), faults, sizeof faults);
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_IN_ERROR, now,
                  "the system is in ERROR (active faults: %s); send RESET_ERROR first", faults);
        return true;
    }
    if ((unsigned)cmd->target_mode >= EMS_TARGET_COUNT) {
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_INVALID, now, "unknown target_mode");
        return true;
    }
    bool charge = cmd->target_mode == EMS_TARGET_MANUAL_CHARGE;
    bool discharge = cmd->target_mode == EMS_TARGET_MANUAL_DISCHARGE;
    if (!charge && !discharge)
        return false; /* AUTO and MANUAL_IDLE need nothing more */

    if (!cmd->has_target_power) {
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_INVALID, now, "%s needs target_power",
                  mode);
        return true;
    }
    if (!isfinite(p) || p < 0) {
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_INVALID, now,
                  "target_power must be a number >= 0");
        return true;
    }
    double max = charge ? l->max_charge_w : l->max_discharge_w;
    if (p > max) {
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_POWER_LIMIT, now,
                  "target_power %g W is above the maximum %s power %g W", p,
                  charge ? "charge" : "discharge", max);
        return true;
    }
    double soc = ems_fsm_last_soc(f);
    if (charge && ems_fsm_is_full(f)) {
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_SOC_LIMIT, now,
                  "SoC %.1f %% is at the maximum %g %% (charging resumes below %g %%)", soc,
                  l->soc_max, l->soc_max - l->soc_hysteresis);
        return true;
    }
    if (discharge && ems_fsm_is_empty(f)) {
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_SOC_LIMIT, now,
                  "SoC %.1f %% is at the minimum %g %% (discharging resumes above %g %%)", soc,
                  l->soc_min, l->soc_min + l->soc_hysteresis);
        return true;
    }
    return false;
}

/* Applies a valid command; fills the accepted (or rejected) result. */
static void cmd__execute(ems_edge_cmd_t *c, const ems_command_t *cmd, int64_t now,
                         ems_edge_cmd_entry_t *e)
{
    ems_command_result_t *r = &e->last;
    const char *id = cmd->command_id;
    e->action = cmd->action;
    e->pending = false;

    if (cmd->has_expires_at && now > cmd->expires_at_ms) {
        cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_EXPIRED, now,
                  "expires_at has passed (%.3f s ago)",
                  (double)(now - cmd->expires_at_ms) / 1000.0);
        return;
    }

    if (cmd->action == EMS_ACTION_SET_MODE) {
        if (cmd__reject_set_mode(c, cmd, now, r))
            return;
        uint64_t gen = 0;
        int rc = ems_fsm_set_mode(c->fsm, cmd->target_mode, cmd->target_power, &gen);
        if (rc < 0) { /* the checks above cover every case; keep the machine's word */
            cmd__fill(r, id, EMS_RESULT_REJECTED,
                      rc == EMS_EPERM ? EMS_REASON_IN_ERROR : EMS_REASON_INVALID, now,
                      "refused by the state machine: %s", ems_strerror(rc));
            return;
        }
        e->gen = gen;
        e->pending = true;
        snprintf(c->last_mode_id, sizeof c->last_mode_id, "%s", id);
        if (cmd->target_mode == EMS_TARGET_MANUAL_CHARGE ||
            cmd->target_mode == EMS_TARGET_MANUAL_DISCHARGE)
            cmd__fill(r, id, EMS_RESULT_ACCEPTED, -1, now, "%s %g W",
                      ems_target_mode_name(cmd->target_mode), cmd->target_power);
        else
            cmd__fill(r, id, EMS_RESULT_ACCEPTED, -1, now, "%s",
                      ems_target_mode_name(cmd->target_mode));
        return;
    }

    if (cmd->action == EMS_ACTION_RESET_ERROR) {
        uint32_t active = 0;
        uint64_t gen = 0;
        int rc = ems_fsm_reset_error(c->fsm, &active, &gen);
        if (rc == EMS_EPERM) {
            cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_NOT_IN_ERROR, now,
                      "the system is not in ERROR (state %s)",
                      ems_state_name(ems_fsm_state(c->fsm)));
            return;
        }
        if (rc < 0) {
            char faults[128];
            ems_fsm_faults_format(active, faults, sizeof faults);
            cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_FAULT_ACTIVE, now,
                      "fault still active: %s", faults);
            return;
        }
        e->gen = gen;
        e->pending = true;
        cmd__fill(r, id, EMS_RESULT_ACCEPTED, -1, now, "ERROR cleared; mode AUTO");
        return;
    }

    cmd__fill(r, id, EMS_RESULT_REJECTED, EMS_REASON_UNSUPPORTED, now, "unknown action");
}

/* ------------------------------------------------------------- entry points */

void ems_edge_cmd_handle(ems_edge_cmd_t *c, const ems_command_t *cmd, int64_t now_utc_ms)
{
    ems_edge_cmd_entry_t *e = cmd__find(c, cmd->command_id);
    if (e) {
        /* Seen before: answer again, never execute again. */
        c->emit(c->ud, &e->last);
        return;
    }
    e = cmd__slot(c);
    if (!e) {
        ems_command_result_t r;
        cmd__fill(&r, cmd->command_id, EMS_RESULT_REJECTED, EMS_REASON_INVALID, now_utc_ms,
                  "more than %d commands in flight; not executed", EMS_EDGE_CMD_HISTORY);
        c->emit(c->ud, &r);
        return;
    }
    memset(e, 0, sizeof *e);
    e->used = true;
    cmd__execute(c, cmd, now_utc_ms, e);
    c->emit(c->ud, &e->last);
}

void ems_edge_cmd_reject(ems_edge_cmd_t *c, const char *command_id, ems_result_reason_t reason,
                         const char *message, int64_t now_utc_ms)
{
    const ems_edge_cmd_entry_t *e = cmd__find(c, command_id);
    if (e) {
        c->emit(c->ud, &e->last);
        return;
    }
    ems_command_result_t r;
    cmd__fill(&r, command_id, EMS_RESULT_REJECTED, (int)reason, now_utc_ms, "%s",
              message ? message : "invalid command");
    c->emit(c->ud, &r);
}

void ems_edge_cmd_after_tick(ems_edge_cmd_t *c, const ems_fsm_output_t *out, int64_t now_utc_ms)
{
    for (unsigned i = 0; i < EMS_EDGE_CMD_HISTORY; i++) {
        ems_edge_cmd_entry_t *e = &c->hist[i];
        if (!e->used || !e->pending || !ems_fsm_applied(c->fsm, e->gen))
            continue;
        e->pending = false;
        /* A copy: cmd__fill clears the result the id lives in. */
        char id[EMS_COMMAND_ID_MAX + 1];
        memcpy(id, e->last.command_id, sizeof id);
        char faults[128];
        ems_fsm_faults_format(out->error_flags, faults, sizeof faults);
        if (e->action == EMS_ACTION_RESET_ERROR) {
            if (out->state == EMS_STATE_ERROR)
                cmd__fill(&e->last, id, EMS_RESULT_FAILED, EMS_REASON_FAULT_ACTIVE, now_utc_ms,
                          "fault came back: %s", faults);
            else
                cmd__fill(&e->last, id, EMS_RESULT_COMPLETED, -1, now_utc_ms, "state %s, mode %s",
                          ems_state_name(out->state), ems_target_mode_name(out->target_mode));
        } else if (out->state == EMS_STATE_ERROR) {
            cmd__fill(&e->last, id, EMS_RESULT_FAILED, EMS_REASON_IN_ERROR, now_utc_ms,
                      "a fault put the system in ERROR before the mode took effect: %s", faults);
        } else if (strcmp(c->last_mode_id, id) != 0) {
            /* A later SET_MODE arrived before this one's first tick. This one
             * was processed and then replaced, as if it had run for no time. */
            cmd__fill(&e->last, id, EMS_RESULT_COMPLETED, -1, now_utc_ms,
                      "superseded by %s before the next tick", c->last_mode_id);
        } else {
            cmd__fill(&e->last, id, EMS_RESULT_COMPLETED, -1, now_utc_ms,
                      "state %s, setpoint %.1f W", ems_state_name(out->state), out->setpoint_w);
        }
        c->emit(c->ud, &e->last);
    }
}
