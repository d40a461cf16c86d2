/* gw_alarm.c: the alarm rules (see gw_alarm.h). */
#include "gw_alarm.h"

#include "status.h"

#include <stdio.h>
#include <string.h>

static const char *const RULES[GW_ALARM_NRULES] = {"error", "sensor_fault", "soc_low", "offline"};

const char *gw_alarm_rule_name(gw_alarm_rule_t r)
{
    return (unsigned)r < GW_ALARM_NRULES ? RULES[r] : "unknown";
}

void gw_alarm_cfg_default(gw_alarm_cfg_t *c)
{
    c->debounce_ms = 10000;
    c->soc_low = 10.0;
    c->soc_hyst = 5.0;
    c->offline_ms = 300000;
}

/* The condition a rule sees in one observation. */
typedef enum { COND_FALSE, COND_TRUE, COND_HOLD } cond_t;

/* Tells a change. When the caller cannot take it (its queue to the
 * database is full), the rule goes back to `prev` with its condition
 * pending since `since`, so the next evaluation tries again: a change is
 * never dropped while the engine believes it was told. */
static void emit_change(gw_alarm_dev_t *d, uint8_t prev, gw_alarm_emit_fn emit, void *ud,
                        const char *dev, gw_alarm_rule_t r, bool raise, int64_t at, int64_t since,
                        const char *msg, const char *det)
{
    gw_alarm_change_t c = {.device_id = dev,
                           .rule = r,
                           .raise = raise,
                           .at_ms = at,
                           .since_ms = since,
                           .message = msg,
                           .details = det ? det : "{}"};
    if (!emit(ud, &c)) {
        d->state[r] = prev;
        d->pending_ms[r] = since > 0 ? since : at;
    }
}

/* The debounce step of one rule: returns true when the rule changes state
 * now and the change must be told (to raised when cond is true, to clear
 * when false). A condition in the hysteresis band (COND_HOLD) keeps the
 * state and restarts the wait. An UNKNOWN rule that settles to clear does
 * so silently: whether an alarm is open in the database is what
 * gw_alarm_sync learns, and an event per rule and device after every
 * gateway restart would only fill the link. */
static bool step(gw_alarm_dev_t *d, gw_alarm_rule_t r, cond_t cond, int64_t debounce_ms,
                 int64_t now_ms, int64_t *since)
{
    if (cond == COND_HOLD) {
        d->pending_ms[r] = 0;
        return false;
    }
    uint8_t want = cond == COND_TRUE ? GW_ALARM_RAISED : GW_ALARM_CLEAR;
    if (d->state[r] == want) {
        d->pending_ms[r] = 0;
        return false;
    }
    if (d->pending_ms[r] == 0)
        d->pending_ms[r] = now_ms;
    if (now_ms - d->pending_ms[r] < debounce_ms)
        return false;
    *since = d->pending_ms[r];
    bool tell = !(d->state[r] == GW_ALARM_UNKNOWN && want == GW_ALARM_CLEAR);
    d->state[r] = want;
    d->pending_ms[r] = 0;
    return tell;
}

static void flags_json(uint32_t flags, char *out, size_t cap, char *names, size_t ncap)
{
    size_t o = (size_t)snprintf(out, cap, "{\"error_flags\":[");
    names[0] = '\0';
    size_t no = 0;
    bool first = true;
    for (unsigned i = 0; i < EMS_FAULT_COUNT; i++) {
        if (!(flags & (1u << i)))
            continue;
        const char *n = ems_fault_name(1u << i);
        if (o < cap)
            o += (size_t)snprintf(out + o, cap - o, "%s\"%s\"", first ? "" : ",", n);
        if (no < ncap)
            no += (size_t)snprintf(names + no, ncap - no, "%s%s", first ? "" : ", ", n);
        first = false;
    }
    if (o < cap)
        snprintf(out + o, cap - o, "]}");
}

void gw_alarm_packet(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const ems_telemetry_t *t,
                     int64_t now_ms, gw_alarm_emit_fn emit, void *ud)
{
    char det[256], names[160], msg[256];
    int64_t since;
    flags_json(t->error_flags, det, sizeof det, names, sizeof names);

    uint8_t prev = d->state[GW_ALARM_ERROR];
    cond_t c = t->state == EMS_STATE_ERROR ? COND_TRUE : COND_FALSE;
    if (step(d, GW_ALARM_ERROR, c, cfg->debounce_ms, now_ms, &since)) {
        if (c == COND_TRUE)
            snprintf(msg, sizeof msg, "device in ERROR%s%s%s", names[0] ? " (" : "", names,
                     names[0] ? ")" : "");
        else
            snprintf(msg, sizeof msg, "device left ERROR (now %s)", ems_state_name(t->state));
        emit_change(d, prev, emit, ud, t->device_id, GW_ALARM_ERROR, c == COND_TRUE, now_ms, since,
                    msg, det);
    }

    prev = d->state[GW_ALARM_SENSOR_FAULT];
    c = t->error_flags & EMS_FAULT_SENSOR_FAULT ? COND_TRUE : COND_FALSE;
    if (step(d, GW_ALARM_SENSOR_FAULT, c, cfg->debounce_ms, now_ms, &since)) {
        snprintf(msg, sizeof msg, c == COND_TRUE ? "sensor fault reported" : "sensor fault gone");
        emit_change(d, prev, emit, ud, t->device_id, GW_ALARM_SENSOR_FAULT, c == COND_TRUE, now_ms,
                    since, msg, det);
    }

    if (cfg->soc_low > 0) {
        prev = d->state[GW_ALARM_SOC_LOW];
        double soc = t->battery_soc;
        c = soc < cfg->soc_low                   ? COND_TRUE
            : soc > cfg->soc_low + cfg->soc_hyst ? COND_FALSE
                                                 : COND_HOLD;
        /* A rule nobody knows yet is settled by the band too: inside it
         * nothing is emitted until the value leaves it. */
        if (step(d, GW_ALARM_SOC_LOW, c, cfg->debounce_ms, now_ms, &since)) {
            char sd[96];
            snprintf(sd, sizeof sd, "{\"soc\":%.1f,\"threshold\":%.1f,\"clear_above\":%.1f}", soc,
                     cfg->soc_low, cfg->soc_low + cfg->soc_hyst);
            if (c == COND_TRUE)
                snprintf(msg, sizeof msg, "battery SoC %.1f %% below %.1f %%", soc, cfg->soc_low);
            else
                snprintf(msg, sizeof msg, "battery SoC %.1f %% back above %.1f %%", soc,
                         cfg->soc_low + cfg->soc_hyst);
            emit_change(d, prev, emit, ud, t->device_id, GW_ALARM_SOC_LOW, c == COND_TRUE, now_ms,
                        since, msg, sd);
        }
    }
}

void gw_alarm_connected(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const char *device_id,
                        int64_t now_ms, gw_alarm_emit_fn emit, void *ud)
{
    (void)cfg;
    d->pending_ms[GW_ALARM_OFFLINE] = 0;
    if (d->state[GW_ALARM_OFFLINE] != GW_ALARM_RAISED)
        return; /* unknown: gw_alarm_sync clears one the database has open */
    d->state[GW_ALARM_OFFLINE] = GW_ALARM_CLEAR;
    emit_change(d, GW_ALARM_RAISED, emit, ud, device_id, GW_ALARM_OFFLINE, false, now_ms, now_ms,
                "device connected again", NULL);
}

void gw_alarm_offline(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const char *device_id,
                      int64_t offline_since_ms, int64_t now_ms, gw_alarm_emit_fn emit, void *ud)
{
    if (cfg->offline_ms <= 0 || offline_since_ms <= 0 ||
        d->state[GW_ALARM_OFFLINE] == GW_ALARM_RAISED ||
        now_ms - offline_since_ms < cfg->offline_ms)
        return;
    uint8_t prev = d->state[GW_ALARM_OFFLINE];
    d->state[GW_ALARM_OFFLINE] = GW_ALARM_RAISED;
    char msg[128], det[64];
    snprintf(msg, sizeof msg, "device offline for more than %lld s",
             (long long)(cfg->offline_ms / 1000));
    snprintf(det, sizeof det, "{\"offline_s\":%lld}", (long long)(cfg->offline_ms / 1000));
    emit_change(d, prev, emit, ud, device_id, GW_ALARM_OFFLINE, true, now_ms, offline_since_ms, msg,
                det);
}

void gw_alarm_disconnected(gw_alarm_dev_t *d)
{
    for (int r = 0; r < GW_ALARM_NRULES; r++)
        if (r != GW_ALARM_OFFLINE)
            d->pending_ms[r] = 0;
}

void gw_alarm_sync(const gw_alarm_cfg_t *cfg, gw_alarm_dev_t *d, const char *device_id,
                   unsigned open_mask, int64_t now_ms, gw_alarm_emit_fn emit, void *ud)
{
    (void)cfg;
    for (int r = 0; r < GW_ALARM_NRULES; r++) {
        bool open = open_mask & (1u << r);
        if (r == GW_ALARM_OFFLINE) {
            /* The device is connected here: an open offline alarm is over. */
            if (open) {
                d->state[r] = GW_ALARM_CLEAR;
                emit_change(d, GW_ALARM_RAISED, emit, ud, device_id, GW_ALARM_OFFLINE, false,
                            now_ms, now_ms, "device connected again", NULL);
            } else if (d->state[r] == GW_ALARM_UNKNOWN) {
                d->state[r] = GW_ALARM_CLEAR;
            }
            continue;
        }
        if (open && d->state[r] == GW_ALARM_UNKNOWN) {
            d->state[r] = GW_ALARM_RAISED; /* the normal clear (debounced) follows */
            d->pending_ms[r] = 0;
        } else if (open && d->state[r] == GW_ALARM_CLEAR) {
            /* Settled clear here before the answer came: clear it now. */
            /* (a refused clear leaves it raised: the rule clears it again) */
            emit_change(d, GW_ALARM_RAISED, emit, ud, device_id, (gw_alarm_rule_t)r, false, now_ms,
                        now_ms, "condition gone", NULL);
        } else if (!open && d->state[r] == GW_ALARM_UNKNOWN) {
            d->state[r] = GW_ALARM_CLEAR; /* a pending raise keeps its wait */
        }
        /* !open && RAISED: raised here and not committed yet (or another
         * gateway cleared it meanwhile): the rules go on from what we saw. */
    }
}
