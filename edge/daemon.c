/* daemon.c: the edge daemon's loop, tick and wiring (see daemon.h and
 * docs/edge-daemon.md). */
#include "daemon.h"

#include "ack.h"
#include "backfill.h"
#include "clock.h"
#include "cmd.h"
#include "command.h"
#include "command_result.h"
#include "device_info.h"
#include "edge_status.h"
#include "edge_telemetry.h"
#include "energy.h"
#include "error.h"
#include "fsm.h"
#include "hwio.h"
#include "log.h"
#include "nack.h"
#include "simio.h"
#include "state.h"
#include "status_http.h"
#include "store.h"
#include "telemetry.h"
#include "timefmt.h"
#include "uplink.h"
#include "wifi.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Command results kept while the link is down (docs/edge-daemon.md,
 * "Commands"): the newest 64, the oldest dropped first. */
#define DMN__RESULTS_MAX 64
#define DMN__EXPIRE_EVERY_MS 60000
#define DMN__LOG_WINDOW_MS 10000
#define DMN__LOG_LINES 5

/* The state file's energy lines are the counters of edge/energy.h, in order. */
_Static_assert(EMS_EDGE_STATE_ENERGY == EMS_ENERGY_COUNT, "state.h and energy.h disagree");


struct ems_edge_daemon {
    uv_loop_t *loop;
    ems_edge_config_t cfg;
    int argc;
    char *const *argv;
    int exit_status;

    /* the core */
    ems_fsm_t fsm;
    ems_edge_cmd_t cmd;
    ems_simio_t sim;
    ems_hwio_t *hw; /* backend = hw */
    ems_io_t *io;
    int64_t soc_saved_mono_ms;
    ems_edge_clock_t clock;
    ems_store_t *store;
    char state_path[EMS_EDGE_PATH_MAX + 8]; /* edge/state.h: the latch survives restarts */
    ems_edge_state_t saved;                 /* what the file holds now */
    bool state_write_failed;
    ems_edge_energy_t energy; /* edge/energy.h; its ceilings are saved.energy_mwh */
    bool energy_ready, energy_write_failed;
    uint64_t energy_persists;
    ems_backfill_t bf;
    bool bf_inited, bf_was_busy;
    uint64_t bf_start_batches, bf_start_packets;
    int64_t bf_start_ms;

    /* the async parts */
    ems_uplink_t *up;
    ems_status_http_t *http;
    uv_timer_t tick, bf_timer;
    uv_signal_t sig_term, sig_int, sig_hup;
    bool handles_inited;
    unsigned handles_open;
    unsigned parts_stopping;
    bool stopping, finished;

    /* the schedule */
    uint64_t deadline_ns;
    uint64_t period_ns;
    uint64_t ticks, ticks_skipped;
    int64_t start_mono_ms;
    int64_t last_expire_ms;

    /* the last tick */
    ems_fsm_output_t last_out;
    bool have_last;
    char last_json[EMS_TELEMETRY_JSON_MAX];
    size_t last_len;
    bool last_synced;
    int last_kernel_synced;
    bool io_failing;
    bool apply_failing;

    /* command results waiting for the link */
    ems_command_result_t results[DMN__RESULTS_MAX];
    unsigned res_head, res_count;

    /* counters */
    uint64_t packets, live_sent, live_failed, store_errors;
    uint64_t acks, acked_packets, nacks, commands, commands_invalid;
    uint64_t results_sent, results_dropped, ignored_msgs;
    /* repeated warnings: DMN__LOG_LINES per DMN__LOG_WINDOW_MS each, then a count */
    ems_log_limit_t msg_log, store_log, send_log, nack_log;
};

static int64_t dmn__mono_ms(void)
{
    return ems_time_mono_ms();
}

/* Cuts a UTF-8 string in place to at most `max` bytes at a character
 * boundary, so a result message stays valid UTF-8. */
static void dmn__utf8_cut(char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    s[n] = '\0';
}

/* ------------------------------------------------------------- sending */

static int dmn__send(void *ud, const char *text, size_t len)
{
    ems_edge_daemon_t *d = ud;
    if (!d->up)
        return EMS_ECLOSED;
    return ems_uplink_send(d->up, text, len);
}

static bool dmn__ready(const ems_edge_daemon_t *d)
{
    return d->up && ems_uplink_ready(d->up);
}

static int dmn__send_result(ems_edge_daemon_t *d, const ems_command_result_t *r)
{
    char buf[EMS_RESULT_JSON_MAX];
    int n = ems_command_result_encode(r, buf, sizeof buf);
    if (n < 0) {
        ems_log_error("command %s: the result cannot be encoded (%s); dropped", r->command_id,
                      ems_strerror(n));
        return 0; /* not worth keeping: it never will encode */
    }
    int rc = dmn__send(d, buf, (size_t)n);
    if (rc == 0)
        d->results_sent++;
    return rc;
}

static void dmn__queue_result(ems_edge_daemon_t *d, const ems_command_result_t *r)
{
    if (d->res_count == DMN__RESULTS_MAX) {
        ems_log_warn("command %s: result '%s' dropped: %d results are waiting for the link",
                     d->results[d->res_head].command_id,
                     ems_result_status_name(d->results[d->res_head].status), DMN__RESULTS_MAX);
        d->res_head = (d->res_head + 1) % DMN__RESULTS_MAX;
        d->res_count--;
        d->results_dropped++;
    }
    d->results[(d->res_head + d->res_count) % DMN__RESULTS_MAX] = *r;
    d->res_count++;
}

static void dmn__flush_results(ems_edge_daemon_t *d)
{
    while (d->res_count && dmn__ready(d)) {
        if (dmn__send_result(d, &d->results[d->res_head]) < 0)
            return;
        d->res_head = (d->res_head + 1) % DMN__RESULTS_MAX;
        d->res_count--;
    }
}

/* The cmd module's emit callback: every result goes upstream now, or waits
 * in memory for the next link (after the ones already waiting). */
static void dmn__emit(void *ud, const ems_command_result_t *r)
{
    ems_edge_daemon_t *d = ud;
    ems_log_info("command %s: %s%s%s%s%s", r->command_id, ems_result_status_name(r->status),
                 r->has_reason ? " " : "", r->has_reason ? ems_result_reason_name(r->reason) : "",
                 r->has_message ? ": " : "", r->has_message ? r->message : "");
    if (d->res_count == 0 && dmn__ready(d) && dmn__send_result(d, r) == 0)
        return;
    dmn__queue_result(d, r);
}

/* ------------------------------------------------------------- the tick */

static void dmn__log_transitions(ems_edge_daemon_t *d, const ems_fsm_output_t *out)
{
    char faults[128];
    if (out->entered_error) {
        ems_fsm_faults_format(out->error_flags, faults, sizeof faults);
        ems_log_error("fsm: ERROR: %s; outputs off (0 W) until RESET_ERROR", faults);
    } else if (out->state_changed) {
        ems_log_info("fsm: state %s (%s, setpoint %.0f W)", ems_state_name(out->state),
                     ems_target_mode_name(out->target_mode), out->setpoint_w);
    }
    if (out->reverted_to_auto)
        ems_log_warn("fsm: manual mode ended after %lld s without the cloud; back to AUTO",
                     (long long)(d->cfg.limits.manual_timeout_ms / 1000));
}

/* Writes the latch to the state file the tick it changes (entered ERROR,
 * more flags, RESET_ERROR), so a restart cannot clear it (edge/state.h). A
 * failed write is said once, and retried at every tick until it works. */
static void dmn__persist_latch(ems_edge_daemon_t *d, const ems_fsm_output_t *out, int64_t utc)
{
    bool latched = out->state == EMS_STATE_ERROR;
    uint32_t flags = latched ? out->error_flags : 0;
    if (latched == d->saved.error_latched && flags == d->saved.error_flags &&
        !d->state_write_failed)
        return;
    ems_edge_state_t st = d->saved;
    if (latched && !st.error_latched)
        st.error_since_ms = utc;
    if (!latched)
        st.error_since_ms = 0;
    st.error_latched = latched;
    st.error_flags = flags;
    char err[1200];
    int rc = ems_edge_state_save(d->state_path, &st, d->cfg.buffer_sync != EMS_STORE_SYNC_OFF, err,
                                 sizeof err);
    if (rc < 0) {
        if (!d->state_write_failed)
            ems_log_error("state: the %s cannot be saved (%s); a restart now would %s",
                          latched ? "ERROR latch" : "reset of the ERROR latch", err,
                          latched ? "forget it" : "bring ERROR back");
        d->state_write_failed = true;
        return;
    }
    if (d->state_write_failed)
        ems_log_info("state: saved again to %s", d->state_path);
    d->state_write_failed = false;
    d->saved = st;
}

/* The hardware back end's state of charge goes to the state file once a
 * minute and at shutdown (`force`): a restart continues counting from it
 * instead of guessing from the voltage. */
static void dmn__persist_soc(ems_edge_daemon_t *d, bool force)
{
    if (!d->hw)
        return;
    int64_t mono = dmn__mono_ms();
    if (!force && mono - d->soc_saved_mono_ms < 60000)
        return;
    double soc = ems_hwio_soc(d->hw);
    if (!isfinite(soc))
        return;
    d->soc_saved_mono_ms = mono;
    ems_edge_state_t st = d->saved;
    st.has_soc = true;
    st.soc = soc;
    st.soc_saved_ms = ems_time_now_ms();
    char err[1200];
    if (ems_edge_state_save(d->state_path, &st, d->cfg.buffer_sync != EMS_STORE_SYNC_OFF, err,
                            sizeof err) < 0) {
        ems_log_warn("state: the state of charge cannot be saved: %s", err);
        return;
    }
    d->saved = st;
}

/* Writes new energy ceilings (edge/energy.h): the counts plus a margin
 * when a count passed its ceiling, the counts themselves at shutdown
 * (`exact`). Until a write succeeds the counters are reported only up to
 * the old ceilings, so the wire never shows more than a restart begins
 * with; a failure is said once and retried at the next tick. */
static void dmn__persist_energy(ems_edge_daemon_t *d, bool exact)
{
    if (!d->energy_ready)
        return;
    ems_edge_state_t st = d->saved;
    ems_edge_energy_propose(&d->energy, exact, st.energy_mwh);
    st.has_energy = true;
    st.energy_since_ms = d->energy.since_ms;
    char err[1200];
    if (ems_edge_state_save(d->state_path, &st, d->cfg.buffer_sync != EMS_STORE_SYNC_OFF, err,
                            sizeof err) < 0) {
        if (!d->energy_write_failed)
            ems_log_error("energy: the counters cannot be saved (%s); they are reported no "
                          "higher than the last saved values until a save works",
                          err);
        d->energy_write_failed = true;
        return;
    }
    if (d->energy_write_failed)
        ems_log_info("energy: counters saved again to %s", d->state_path);
    d->energy_write_failed = false;
    d->saved = st;
    ems_edge_energy_persisted(&d->energy, st.energy_mwh);
    d->energy_persists++;
}

/* Starts the energy counters from the state file's ceilings, or a new
 * series at 0 (first start, a file from before energy counting, a damaged
 * file: a number that fails its checksum is not trusted, and a new
 * `energy.since` tells the cloud that the old series ended). */
static void dmn__restore_energy(ems_edge_daemon_t *d, int load_rc)
{
    int64_t period_ms = d->cfg.tick_ms;
    if (load_rc == 0 && d->saved.has_energy) {
        ems_edge_energy_init(&d->energy, period_ms, d->saved.energy_since_ms, d->saved.energy_mwh);
        char since[EMS_TIME_STR_MAX] = "?";
        ems_time_format(d->saved.energy_since_ms, since, sizeof since);
        ems_log_info("energy: counters restored (battery +%.3f/-%.3f Wh, grid +%.3f/-%.3f Wh, "
                     "series since %s)",
                     (double)d->saved.energy_mwh[0] / 1000.0,
                     (double)d->saved.energy_mwh[1] / 1000.0,
                     (double)d->saved.energy_mwh[2] / 1000.0,
                     (double)d->saved.energy_mwh[3] / 1000.0, since);
    } else {
        int64_t now = ems_time_now_ms();
        ems_edge_energy_init(&d->energy, period_ms, now, NULL);
        if (load_rc == EMS_ENOENT || load_rc == 0)
            ems_log_info("energy: no saved counters; a new series starts at 0");
        else
            ems_log_warn("energy: the state file is not trusted; a new series of counters "
                         "starts at 0 (packets carry a new energy.since)");
        d->saved.has_energy = true;
        d->saved.energy_since_ms = now;
        memset(d->saved.energy_mwh, 0, sizeof d->saved.energy_mwh);
    }
    d->energy_ready = true;
}

/* Reads the state file at start: a latched ERROR comes back as it was. */
static int dmn__load_state(ems_edge_daemon_t *d)
{
    if (ems_edge_state_path(d->cfg.buffer_path, d->state_path, sizeof d->state_path) < 0) {
        ems_log_error("state: buffer_path is too long for its .state file");
        return EMS_ECONFIG;
    }
    char err[1200];
    int rc = ems_edge_state_load(d->state_path, &d->saved, err, sizeof err);
    dmn__restore_energy(d, rc);
    if (rc == EMS_ENOENT)
        return 0;
    if (rc < 0) {
        ems_log_error("state: %s; starting in ERROR to be safe: the outputs stay off until "
                      "RESET_ERROR (the file is rewritten then)",
                      err);
        ems_fsm_restore_error(&d->fsm, 0);
        d->saved.error_flags = 0;
        d->state_write_failed = true; /* rewrite it at the first tick */
        return 0;
    }
    if (d->saved.error_latched) {
        char faults[128];
        ems_fsm_faults_format(d->saved.error_flags, faults, sizeof faults);
        ems_log_error("state: ERROR was latched before this start (%s, since %lld ms UTC); the "
                      "outputs stay off until RESET_ERROR",
                      faults, (long long)d->saved.error_since_ms);
        ems_fsm_restore_error(&d->fsm, d->saved.error_flags);
    }
    return 0;
}

static void dmn__expire(ems_edge_daemon_t *d, int64_t utc, int64_t mono)
{
    if (!d->last_synced || mono - d->last_expire_ms < DMN__EXPIRE_EVERY_MS)
        return;
    d->last_expire_ms = mono;
    for (int i = 0; i < 10; i++) {
        uint64_t n = 0;
        if (ems_store_expire(d->store, utc, &n) < 0 || n < 10000)
            break;
    }
}

/* Integrates the powers this packet reports (edge/energy.h), writes new
 * ceilings first when a counter passed its own, and puts the counters into
 * the packet. */
static void dmn__energy_tick(ems_edge_daemon_t *d, ems_telemetry_t *t, const ems_io_sample_t *s)
{
    if (!d->energy_ready)
        return;
    ems_edge_energy_add(&d->energy, EMS_ENERGY_BATTERY, t->battery_power, s->battery_ms);
    ems_edge_energy_add(&d->energy, EMS_ENERGY_GRID, t->grid_power, s->grid_ms);
    if (ems_edge_energy_needs_persist(&d->energy))
        dmn__persist_energy(d, false);
    uint64_t mwh[EMS_ENERGY_COUNT];
    ems_edge_energy_report(&d->energy, mwh);
    for (int i = 0; i < EMS_ENERGY_COUNT; i++)
        if ((double)mwh[i] / 1000.0 > EMS_ENERGY_WH_MAX)
            return; /* beyond the protocol's range (a TWh): left out, never wrong */
    t->has_energy = true;
    t->energy_since_ms = d->energy.since_ms;
    t->energy_battery_charged_wh = (double)mwh[EMS_ENERGY_BATTERY_CHARGED] / 1000.0;
    t->energy_battery_discharged_wh = (double)mwh[EMS_ENERGY_BATTERY_DISCHARGED] / 1000.0;
    t->energy_grid_import_wh = (double)mwh[EMS_ENERGY_GRID_IMPORT] / 1000.0;
    t->energy_grid_export_wh = (double)mwh[EMS_ENERGY_GRID_EXPORT] / 1000.0;
    if (!ems_time_ms_valid(t->energy_since_ms))
        t->has_energy = false;
}

static void dmn__tick(ems_edge_daemon_t *d, int64_t now_ms)
{
    int64_t utc = ems_time_now_ms();
    ems_fsm_input_t in;
    memset(&in, 0, sizeof in);
    in.cloud_connected = dmn__ready(d);

    /* 1. read */
    int rc = ems_io_read(d->io, now_ms, &in.sample);
    if (rc < 0 && !d->io_failing)
        ems_log_error("io: reading the sensors failed: %s (the readings go stale)",
                      ems_strerror(rc));
    else if (rc == 0 && d->io_failing)
        ems_log_info("io: sensors read again");
    d->io_failing = rc < 0;

    /* 2. decide, 3. act */
    ems_fsm_output_t out;
    ems_fsm_step(&d->fsm, &in, now_ms, &out);
    rc = ems_io_apply_setpoint(d->io, out.setpoint_w);
    if (rc < 0) {
        /* Said once when it starts, not every second while it lasts. */
        if (!d->apply_failing)
            ems_log_error("io: the back end refused setpoint %.0f W: %s; outputs to safe "
                          "(every tick until it works again)",
                          out.setpoint_w, ems_strerror(rc));
        ems_io_safe_off(d->io);
    } else if (d->apply_failing) {
        ems_log_info("io: the back end takes the setpoint again (%.0f W)", out.setpoint_w);
    }
    d->apply_failing = rc < 0;
    dmn__log_transitions(d, &out);
    dmn__persist_latch(d, &out, utc);

    /* 4. settle commands: their results go upstream */
    ems_edge_cmd_after_tick(&d->cmd, &out, utc);

    /* 5. telemetry */
    int64_t mono = dmn__mono_ms();
    d->last_kernel_synced = ems_edge_clock_kernel_synced();
    bool synced = ems_edge_clock_synced(&d->clock, d->last_kernel_synced, utc, mono);
    if (synced != d->last_synced)
        ems_log_info("clock: %s", synced ? "synchronised; packets carry clock_synced=true"
                                         : "not synchronised; packets carry clock_synced=false");
    d->last_synced = synced;
    int dbm = 0;
    bool has_wifi = ems_wifi_read(d->cfg.wifi_path, &dbm);
    uint64_t seq = ems_store_next_seq(d->store);
    ems_edge_telemetry_ctx_t ctx = {
        .device_id = d->cfg.device_id,
        .utc_ms = utc,
        .clock_synced = synced,
        .seq = seq,
        .has_wifi = has_wifi,
        .wifi_dbm = dbm,
    };
    ems_telemetry_t t;
    ems_edge_telemetry_build(&t, &ctx, &out, &in.sample);
    t.has_backlog = true;
    t.backlog = ems_store_pending(d->store);
    dmn__energy_tick(d, &t, &in.sample);
    char buf[EMS_TELEMETRY_JSON_MAX];
    int n = ems_telemetry_encode(&t, buf, sizeof buf);
    d->last_out = out;
    if (n < 0) {
        ems_log_error("telemetry: packet seq %llu cannot be encoded: %s", (unsigned long long)seq,
                      ems_strerror(n));
        return;
    }

    /* 6. the buffer first, so nothing is sent that a crash could forget */
    rc = ems_store_append(d->store, seq, utc, buf, (size_t)n);
    bool consumed = ems_store_next_seq(d->store) != seq;
    if (rc < 0) {
        d->store_errors++;
        ems_log_limited(&d->store_log, dmn__mono_ms(), EMS_LOG_ERROR, "buffer: packet seq %llu not stored: %s (%s)", (unsigned long long)seq,
                          ems_strerror(rc), consumed ? "sent live only" : "not sent");
    }
    if (!consumed)
        return; /* its seq is not ours to use: sending it could repeat one */
    d->packets++;
    memcpy(d->last_json, buf, (size_t)n + 1);
    d->last_len = (size_t)n;
    d->have_last = true;

    /* 7. live */
    if (dmn__ready(d)) {
        rc = dmn__send(d, buf, (size_t)n);
        if (rc == 0)
            d->live_sent++;
        else
            d->live_failed++;
        if (ems_backfill_live_result(&d->bf, seq, mono, rc))
            ems_uplink_drop(d->up, "send queue full");
        else if (rc < 0)
            ems_log_limited(&d->send_log, mono, EMS_LOG_WARN, "telemetry: live send of seq %llu failed: %s; sent again after the ack "
                         "timeout",
                         (unsigned long long)seq, ems_strerror(rc));
    }
    ems_store_tick(d->store);
    dmn__expire(d, utc, mono);
    dmn__persist_soc(d, false);
}

static void dmn__tick_cb(uv_timer_t *t);

/* Arms the timer for the next deadline: previous deadline + period. If
 * that has passed too (the process was stalled: SIGSTOP, swap, a slow SD
 * card), the missed deadlines are skipped, not run in a burst: the
 * schedule stays on its grid. `late_ns`: how late the tick just run was. */
static void dmn__schedule(ems_edge_daemon_t *d, uint64_t late_ns)
{
    uint64_t now = uv_hrtime();
    uint64_t due = d->deadline_ns + d->period_ns;
    uint64_t missed = 0;
    if (due <= now) {
        missed = (now - due) / d->period_ns + 1;
        due += missed * d->period_ns;
        d->ticks_skipped += missed;
    }
    if (missed || late_ns >= d->period_ns / 2)
        ems_log_warn("tick: ran %.3f s late (the process was stalled); %llu missed tick(s) "
                     "skipped, the schedule stays on its grid",
                     (double)late_ns / 1e9, (unsigned long long)missed);
    d->deadline_ns = due;
    uint64_t delay = (due - now + 999999u) / 1000000u;
    uv_update_time(d->loop);
    uv_timer_start(&d->tick, dmn__tick_cb, delay, 0);
}

static void dmn__tick_cb(uv_timer_t *t)
{
    ems_edge_daemon_t *d = t->data;
    if (d->stopping)
        return;
    /* On time (within the timer's jitter) the tick runs at its deadline,
     * so a seed replays the same plant; late, it runs at the real time. */
    uint64_t now = uv_hrtime();
    uint64_t late = now > d->deadline_ns ? now - d->deadline_ns : 0;
    uint64_t at = late < 50000000u ? d->deadline_ns : now;
    dmn__tick(d, (int64_t)(at / 1000000u));
    d->ticks++;
    int64_t mono = dmn__mono_ms(); /* summaries of repeated warnings, once their window ends */
    ems_log_limit_flush(&d->msg_log, mono);
    ems_log_limit_flush(&d->store_log, mono);
    ems_log_limit_flush(&d->send_log, mono);
    ems_log_limit_flush(&d->nack_log, mono);
    dmn__schedule(d, late);
}

/* ------------------------------------------------------------- backfill */

static void dmn__bf_cb(uv_timer_t *t)
{
    ems_edge_daemon_t *d = t->data;
    if (d->stopping || !dmn__ready(d))
        return;
    int rc = ems_backfill_pump(&d->bf, dmn__mono_ms(), ems_uplink_queued(d->up) == 0, dmn__send, d);
    if (rc == EMS_ENOSPC)
        ems_uplink_drop(d->up, "send queue full during backfill");
    bool busy = ems_backfill_busy(&d->bf);
    if (d->bf_was_busy && !busy) {
        ems_backfill_stats_t s;
        ems_backfill_stats(&d->bf, &s);
        if (s.batches > d->bf_start_batches)
            ems_log_info("backfill: caught up: %llu packets in %llu batches in %.1f s",
                         (unsigned long long)(s.packets - d->bf_start_packets),
                         (unsigned long long)(s.batches - d->bf_start_batches),
                         (double)(dmn__mono_ms() - d->bf_start_ms) / 1000.0);
    }
    d->bf_was_busy = busy;
}

static ems_backfill_config_t dmn__bf_config(const ems_edge_config_t *c)
{
    ems_backfill_config_t b;
    ems_backfill_config_default(&b);
    b.batch_max = (unsigned)c->backfill_batch;
    b.interval_ms = c->backfill_interval_ms;
    b.inflight_max = (unsigned)c->backfill_inflight;
    b.ack_timeout_ms = c->ack_timeout_ms;
    return b;
}

/* ------------------------------------------------------------- the link */

static void dmn__send_device_info(ems_edge_daemon_t *d)
{
    ems_device_info_t di;
    memset(&di, 0, sizeof di);
    di.has_firmware = true;
    snprintf(di.firmware, sizeof di.firmware, "%s", EMS_EDGE_FIRMWARE);
    di.has_capacity_wh = true;
    di.capacity_wh = d->hw ? ems_hwio_capacity_wh(d->hw) : d->sim.plant.cfg.capacity_kwh * 1000.0;
    const ems_fsm_limits_t *l = ems_fsm_limits(&d->fsm);
    di.has_max_charge_w = di.has_max_discharge_w = di.has_soc_min = di.has_soc_max = true;
    di.max_charge_w = l->max_charge_w;
    di.max_discharge_w = l->max_discharge_w;
    di.soc_min = l->soc_min;
    di.soc_max = l->soc_max;
    char buf[EMS_DEVICE_INFO_JSON_MAX];
    int n = ems_device_info_encode(&di, buf, sizeof buf);
    if (n < 0 || dmn__send(d, buf, (size_t)n) < 0)
        ems_log_warn("uplink: device_info not sent");
}

static void dmn__on_ready(void *ud, const ems_welcome_t *w, int64_t utc, int64_t mono)
{
    ems_edge_daemon_t *d = ud;
    if (w) {
        if (strcmp(w->device_id, d->cfg.device_id) != 0)
            ems_log_warn("uplink: the welcome names device %s, this is %s", w->device_id,
                         d->cfg.device_id);
        int64_t off = ems_edge_clock_welcome(&d->clock, w->server_time_ms, utc, mono);
        bool agree = off >= -EMS_EDGE_CLOCK_TOLERANCE_MS && off <= EMS_EDGE_CLOCK_TOLERANCE_MS;
        ems_log_info("clock: the gateway's time is %+.3f s from ours%s", (double)off / 1000.0,
                     agree ? " (within 2 s: trusted)"
                           : (d->last_kernel_synced == 1 ? " (NTP says ours is right)"
                                                         : " (packets stay clock_synced=false)"));
    }
    /* Order on a new link: device_info, the results that waited, then the
     * next tick's live packet, and only then the backlog behind it. */
    ems_backfill_session(&d->bf);
    uint64_t pending = ems_store_pending(d->store);
    if (pending)
        ems_log_info("backfill: %llu unacknowledged packets will follow the live ones",
                     (unsigned long long)pending);
    ems_backfill_stats_t s;
    ems_backfill_stats(&d->bf, &s);
    d->bf_start_batches = s.batches;
    d->bf_start_packets = s.packets;
    d->bf_start_ms = dmn__mono_ms();
    d->bf_was_busy = true;
    dmn__send_device_info(d);
    dmn__flush_results(d);
    uint64_t iv = (uint64_t)d->cfg.backfill_interval_ms;
    uv_timer_start(&d->bf_timer, dmn__bf_cb, iv, iv);
}

static void dmn__on_down(void *ud)
{
    ems_edge_daemon_t *d = ud;
    ems_backfill_down(&d->bf);
    uv_timer_stop(&d->bf_timer);
}

static void dmn__on_ack(ems_edge_daemon_t *d, const json_t *root)
{
    ems_ack_t a;
    ems_verr_t err;
    if (ems_ack_from_json(root, &a, &err) < 0) {
        char why[400];
        ems_log_limited(&d->msg_log, dmn__mono_ms(), EMS_LOG_WARN, "uplink: invalid ack ignored: %s", ems_verr_format(&err, why, sizeof why));
        d->ignored_msgs++;
        return;
    }
    uint64_t r[EMS_ACK_RANGES_MAX][2];
    for (size_t i = 0; i < a.count; i++) {
        r[i][0] = a.ranges[i].first;
        r[i][1] = a.ranges[i].last;
    }
    uint64_t deleted = 0;
    int rc = ems_store_ack(d->store, (const uint64_t(*)[2])r, a.count, &deleted);
    if (rc < 0)
        ems_log_error("buffer: applying an ack failed: %s", ems_strerror(rc));
    ems_backfill_acked(&d->bf, (const uint64_t(*)[2])r, a.count);
    d->acks++;
    d->acked_packets += deleted;
}

static void dmn__on_nack(ems_edge_daemon_t *d, const json_t *root)
{
    ems_nack_t nk;
    ems_verr_t err;
    if (ems_nack_from_json(root, &nk, &err) < 0) {
        char why[400];
        ems_log_limited(&d->msg_log, dmn__mono_ms(), EMS_LOG_WARN, "uplink: invalid nack ignored: %s",
                         ems_verr_format(&err, why, sizeof why));
        d->ignored_msgs++;
        return;
    }
    d->nacks++;
    /* A wrong clock makes every packet a nack (docs/protocol.md, timestamp
     * rule): one line per packet would be one a second. */
    if (!nk.has_seq) {
        ems_log_limited(&d->nack_log, dmn__mono_ms(), EMS_LOG_WARN,
                        "uplink: the gateway refused a message: %s%s%s", nk.path,
                         nk.path[0] ? ": " : "", nk.reason);
        return;
    }
    int rc = ems_store_nack(d->store, nk.seq);
    ems_backfill_nacked(&d->bf, nk.seq);
    ems_log_limited(&d->nack_log, dmn__mono_ms(), EMS_LOG_WARN,
                    "uplink: the gateway refused packet seq %llu for good (%s%s%s); %s",
                     (unsigned long long)nk.seq, nk.path, nk.path[0] ? ": " : "", nk.reason,
                     rc == 1 ? "dropped from the buffer" : "it was not buffered");
}

static void dmn__on_command(ems_edge_daemon_t *d, const json_t *root)
{
    int64_t utc = ems_time_now_ms();
    ems_command_t c;
    ems_verr_t err;
    if (ems_command_from_json(root, &c, &err) == 0) {
        d->commands++;
        if (c.action == EMS_ACTION_SET_MODE)
            ems_log_info("command %s: SET_MODE %s%s", c.command_id,
                         ems_target_mode_name(c.target_mode),
                         c.has_target_power ? " with power" : "");
        else
            ems_log_info("command %s: %s", c.command_id, ems_action_name(c.action));
        ems_edge_cmd_handle(&d->cmd, &c, utc);
        return;
    }
    d->commands_invalid++;
    char why[400];
    ems_verr_format(&err, why, sizeof why);
    dmn__utf8_cut(why, 200);
    json_t *id = json_object_get(root, "command_id");
    if (json_is_string(id) && ems_command_id_valid(json_string_value(id), json_string_length(id))) {
        ems_result_reason_t reason = EMS_REASON_INVALID;
        json_t *a = json_object_get(root, "action");
        ems_action_t act;
        if (json_is_string(a) && strlen(json_string_value(a)) == json_string_length(a) &&
            ems_action_parse(json_string_value(a), &act) < 0)
            reason = EMS_REASON_UNSUPPORTED;
        ems_log_limited(&d->msg_log, dmn__mono_ms(), EMS_LOG_WARN, "command %s: invalid, rejected %s: %s", json_string_value(id),
                         ems_result_reason_name(reason), why);
        ems_edge_cmd_reject(&d->cmd, json_string_value(id), reason, why, utc);
    } else {
        ems_log_limited(&d->msg_log, dmn__mono_ms(), EMS_LOG_WARN,
                        "uplink: a command without a usable command_id was ignored: %s", why);
    }
}

static void dmn__on_message(void *ud, ems_msg_kind_t kind, const json_t *root, const char *text,
                            size_t len)
{
    ems_edge_daemon_t *d = ud;
    (void)text;
    switch (kind) {
    case EMS_MSG_ACK:
        dmn__on_ack(d, root);
        break;
    case EMS_MSG_NACK:
        dmn__on_nack(d, root);
        break;
    case EMS_MSG_COMMAND:
        dmn__on_command(d, root);
        break;
    default:
        d->ignored_msgs++;
        ems_log_limited(&d->msg_log, dmn__mono_ms(), EMS_LOG_WARN, "uplink: a %s message (%zu bytes) is not for a device; ignored",
                         ems_message_kind_name(kind), len);
        break;
    }
}

/* ------------------------------------------------------------- status */

/* The snapshot the local endpoint renders (edge_status.h). */
static void dmn__status(ems_edge_daemon_t *d, ems_edge_status_t *s)
{
    memset(s, 0, sizeof *s);
    s->device_id = d->cfg.device_id;
    s->cloud_url = d->cfg.cloud_url;
    s->hwio = d->hw;
    s->mono_ms = dmn__mono_ms();
    s->start_mono_ms = d->start_mono_ms;
    s->state = ems_fsm_state(&d->fsm);
    s->target_mode = ems_fsm_target_mode(&d->fsm);
    s->target_power = ems_fsm_target_power(&d->fsm);
    s->have_last = d->have_last;
    s->setpoint_w = d->last_out.setpoint_w;
    s->error_flags = d->last_out.error_flags;
    s->active_faults = ems_fsm_active_faults(&d->fsm);
    s->last_json = d->last_json;
    s->last_len = d->last_len;
    s->clock_synced = d->last_synced;
    s->kernel_synced = d->last_kernel_synced;
    s->have_gateway_offset =
        ems_edge_clock_offset(&d->clock, ems_time_now_ms(), s->mono_ms, &s->gateway_offset_ms);
    s->have_link = d->up != NULL;
    if (d->up)
        ems_uplink_stats(d->up, &s->link);
    ems_store_stats(d->store, &s->buffer);
    ems_backfill_stats(&d->bf, &s->backfill);
    s->energy_ready = d->energy_ready;
    if (d->energy_ready) {
        ems_edge_energy_report(&d->energy, s->energy_mwh);
        memcpy(s->energy_ceiling_mwh, d->energy.ceiling_mwh, sizeof s->energy_ceiling_mwh);
        s->energy_since_ms = d->energy.since_ms;
        s->energy_dt_capped = d->energy.dt_capped;
    }
    s->energy_saves = d->energy_persists;
    s->energy_save_failing = d->energy_write_failed;
    s->ticks = d->ticks;
    s->ticks_skipped = d->ticks_skipped;
    s->results_waiting = d->res_count;
    s->packets = d->packets;
    s->live_sent = d->live_sent;
    s->store_errors = d->store_errors;
    s->commands = d->commands;
    s->commands_invalid = d->commands_invalid;
    s->ignored_msgs = d->ignored_msgs;
}

static int dmn__status_json(void *ud, ems_buf_t *out)
{
    ems_edge_status_t s;
    dmn__status(ud, &s);
    return ems_edge_status_json(&s, out);
}

static int dmn__metrics(void *ud, ems_buf_t *out)
{
    ems_edge_status_t s;
    dmn__status(ud, &s);
    return ems_edge_status_metrics(&s, out);
}

static int dmn__sim(void *ud, const char *query, size_t len, char *msg, size_t cap)
{
    ems_edge_daemon_t *d = ud;
    return ems_simio_control(&d->sim, ems_fsm_limits(&d->fsm), query, len, msg, cap);
}

/* ------------------------------------------------------------- reload */

static void dmn__reload(ems_edge_daemon_t *d)
{
    ems_edge_config_t *n = malloc(sizeof *n);
    if (!n) {
        ems_log_error("reload: out of memory; keeping the running configuration");
        return;
    }
    char err[1024];
    if (ems_edge_config_from_args(n, d->argc, d->argv, err, sizeof err) < 0) {
        ems_log_error("reload: refused, keeping the running configuration: %s", err);
        free(n);
        return;
    }
    ems_edge_config_t *c = &d->cfg;
    /* What can change while running. */
    ems_fsm_set_limits(&d->fsm, &n->limits);
    c->limits = n->limits;
    if (n->log_level != c->log_level) {
        ems_log_set_level(n->log_level);
        c->log_level = n->log_level;
    }
    snprintf(c->wifi_path, sizeof c->wifi_path, "%s", n->wifi_path);
    c->backfill_batch = n->backfill_batch;
    c->backfill_inflight = n->backfill_inflight;
    c->ack_timeout_ms = n->ack_timeout_ms;
    ems_backfill_config_t bc = dmn__bf_config(n);
    ems_backfill_set_config(&d->bf, &bc);
    if (n->backfill_interval_ms != c->backfill_interval_ms) {
        c->backfill_interval_ms = n->backfill_interval_ms;
        if (uv_is_active((uv_handle_t *)&d->bf_timer)) {
            uint64_t iv = (uint64_t)c->backfill_interval_ms;
            uv_timer_start(&d->bf_timer, dmn__bf_cb, iv, iv);
        }
    }
    if (strcmp(n->ca_file, c->ca_file) != 0 && d->up && n->ca_file[0] &&
        ems_uplink_reload_ca(d->up, n->ca_file) == 0)
        snprintf(c->ca_file, sizeof c->ca_file, "%s", n->ca_file);
    if (n->sim_control != c->sim_control) {
        c->sim_control = n->sim_control;
        if (d->http)
            ems_status_http_set_sim(d->http, c->sim_control ? dmn__sim : NULL);
    }
    /* What needs a restart: said, not silently ignored. */
    struct {
        const char *key;
        bool changed;
    } fixed[] = {
        {"device_id", strcmp(n->device_id, c->device_id) != 0},
        {"cloud_url", strcmp(n->cloud_url, c->cloud_url) != 0},
        {"token_file", strcmp(n->token_file, c->token_file) != 0},
        {"allow_insecure_ws", n->allow_insecure_ws != c->allow_insecure_ws},
        {"backend/plant_*",
         n->backend != c->backend || memcmp(&n->plant, &c->plant, sizeof n->plant) != 0 ||
             memcmp(&n->hw, &c->hw, sizeof n->hw) != 0 || n->sim_speed != c->sim_speed},
        {"buffer_*", strcmp(n->buffer_path, c->buffer_path) != 0 ||
                         n->buffer_max_bytes != c->buffer_max_bytes ||
                         n->buffer_max_age_ms != c->buffer_max_age_ms ||
                         n->buffer_min_free_bytes != c->buffer_min_free_bytes ||
                         n->buffer_sync != c->buffer_sync ||
                         n->buffer_commit_interval_ms != c->buffer_commit_interval_ms},
        {"status_port/status_bind",
         n->status_port != c->status_port || strcmp(n->status_bind, c->status_bind) != 0},
        {"ws_ping_s/ws_timeout_s/reconnect_*", n->ws_ping_ms != c->ws_ping_ms ||
                                                   n->ws_timeout_ms != c->ws_timeout_ms ||
                                                   n->reconnect_min_ms != c->reconnect_min_ms ||
                                                   n->reconnect_max_ms != c->reconnect_max_ms},
        {"tick_ms", n->tick_ms != c->tick_ms},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (fixed[i].changed)
            ems_log_warn("reload: %s changed; it takes effect after a restart", fixed[i].key);
    ems_log_info("reload: configuration reloaded (limits, log level, backfill, wifi_path, "
                 "ca_file, sim_control)");
    free(n);
}

/* ------------------------------------------------------------- signals */

static void dmn__signal_cb(uv_signal_t *s, int signum)
{
    ems_edge_daemon_t *d = s->data;
    if (signum == SIGHUP) {
        ems_log_info("SIGHUP: reloading the configuration");
        dmn__reload(d);
        return;
    }
    ems_edge_daemon_shutdown(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ------------------------------------------------------------- life */

int ems_edge_daemon_new(uv_loop_t *loop, const ems_edge_config_t *cfg, int argc, char *const argv[],
                        ems_edge_daemon_t **out)
{
    *out = NULL;
    ems_edge_daemon_t *d = calloc(1, sizeof *d);
    if (!d)
        return EMS_ENOMEM;
    d->loop = loop;
    d->cfg = *cfg;
    d->argc = argc;
    d->argv = argv;
    d->last_kernel_synced = -1;
    ems_log_limit_t *lim[4] = {&d->msg_log, &d->store_log, &d->send_log, &d->nack_log};
    static const char *const what[4] = {"uplink: bad messages", "buffer: packets not stored",
                                         "telemetry: live sends failed",
                                         "uplink: messages refused by the gateway"};
    for (int i = 0; i < 4; i++) {
        lim[i]->what = what[i];
        lim[i]->interval_ms = DMN__LOG_WINDOW_MS;
        lim[i]->burst = DMN__LOG_LINES;
    }
    *out = d;
    return 0;
}

static void dmn__handle_closed(uv_handle_t *h)
{
    ems_edge_daemon_t *d = h->data;
    d->handles_open--;
}

static void dmn__close_handle(ems_edge_daemon_t *d, void *h)
{
    if (!uv_is_closing(h)) {
        d->handles_open++;
        uv_close(h, dmn__handle_closed);
    }
}

/* Everything async has stopped: flush the buffer, close the last handles. */
static void dmn__finish(ems_edge_daemon_t *d)
{
    if (d->finished)
        return;
    d->finished = true;
    if (d->bf_inited) {
        ems_backfill_free(&d->bf);
        d->bf_inited = false;
    }
    if (d->store) {
        uint64_t pending = ems_store_pending(d->store);
        int rc = ems_store_close(d->store);
        d->store = NULL;
        if (rc < 0)
            ems_log_error("buffer: closing failed: %s (checked at the next start)",
                          ems_strerror(rc));
        else
            ems_log_info("buffer: flushed and closed; %llu unacknowledged packets kept",
                         (unsigned long long)pending);
    }
    if (d->handles_inited) {
        dmn__close_handle(d, &d->tick);
        dmn__close_handle(d, &d->bf_timer);
        dmn__close_handle(d, &d->sig_term);
        dmn__close_handle(d, &d->sig_int);
        dmn__close_handle(d, &d->sig_hup);
    }
}

static void dmn__hw_stopped(void *arg)
{
    ems_edge_daemon_t *d = arg;
    d->hw = NULL;
    d->io = NULL;
    if (--d->parts_stopping == 0)
        dmn__finish(d);
}

static void dmn__uplink_stopped(void *arg)
{
    ems_edge_daemon_t *d = arg;
    d->up = NULL;
    if (--d->parts_stopping == 0)
        dmn__finish(d);
}

static void dmn__http_stopped(void *arg)
{
    ems_edge_daemon_t *d = arg;
    d->http = NULL;
    if (--d->parts_stopping == 0)
        dmn__finish(d);
}

void ems_edge_daemon_shutdown(ems_edge_daemon_t *d, const char *why)
{
    if (d->stopping) {
        ems_log_warn("%s again: closing the link at once", why);
        if (d->up)
            ems_uplink_stop(d->up, NULL, NULL); /* a second stop aborts */
        return;
    }
    d->stopping = true;
    ems_log_info("%s: shutting down", why);
    if (d->io) {
        int rc = ems_io_safe_off(d->io);
        if (rc < 0)
            ems_log_error("io: safe_off failed: %s", ems_strerror(rc));
        else
            ems_log_info("io: outputs in the safe state (0 W)");
    }
    if (d->handles_inited) {
        uv_timer_stop(&d->tick);
        uv_timer_stop(&d->bf_timer);
    }
    /* No tick runs any more: the counts are final, so the ceilings become
     * the counts and a clean restart continues without any error. */
    dmn__persist_energy(d, true);
    d->parts_stopping = 1; /* held until both are asked, so neither finishes early */
    if (d->up) {
        d->parts_stopping++;
        ems_uplink_stop(d->up, dmn__uplink_stopped, d);
    }
    if (d->http) {
        d->parts_stopping++;
        ems_status_http_stop(d->http, dmn__http_stopped, d);
    }
    if (d->hw) {
        dmn__persist_soc(d, true);
        d->parts_stopping++;
        ems_hwio_close(d->hw, dmn__hw_stopped, d); /* outputs safe again, lines released */
    }
    if (--d->parts_stopping == 0)
        dmn__finish(d);
}

static int dmn__open_store(ems_edge_daemon_t *d)
{
    ems_store_config_t sc;
    ems_store_config_default(&sc);
    sc.path = d->cfg.buffer_path;
    sc.max_bytes = d->cfg.buffer_max_bytes;
    sc.max_age_ms = d->cfg.buffer_max_age_ms;
    sc.min_free_bytes = d->cfg.buffer_min_free_bytes;
    sc.sync = d->cfg.buffer_sync;
    sc.commit_interval_ms = d->cfg.buffer_commit_interval_ms;
    /* A device whose storage was wiped must never repeat a seq the cloud
     * already has; with a trusted clock, ms since the epoch are a number
     * no earlier packet can have reached (store.h, first_seq). */
    if (ems_edge_clock_kernel_synced() == 1)
        sc.first_seq = (uint64_t)ems_time_now_ms();
    int rc = ems_store_open(&d->store, &sc);
    if (rc < 0) {
        ems_log_error("buffer: cannot open %s: %s%s", d->cfg.buffer_path, ems_strerror(rc),
                      rc == EMS_EAGAIN ? " (another ems-edge uses it)" : "");
        d->store = NULL;
        return rc;
    }
    ems_log_info("buffer: %s open: %llu unacknowledged packets, next seq %llu", d->cfg.buffer_path,
                 (unsigned long long)ems_store_pending(d->store),
                 (unsigned long long)ems_store_next_seq(d->store));
    return 0;
}

/* The back end: the simulated plant or the hardware. A hardware failure at
 * start (a chip missing, a wrong chip ID, a line in use) refuses to start
 * with the bus, address or line named: running blind is worse. */
static int dmn__open_io(ems_edge_daemon_t *d)
{
    if (d->cfg.backend == EMS_EDGE_BACKEND_HW) {
        char err[1024];
        double soc0 = d->saved.has_soc ? d->saved.soc : NAN;
        int rc = ems_hwio_open(d->loop, &d->cfg.hw, soc0, &d->hw, err, sizeof err);
        if (rc < 0) {
            ems_log_error("hw: %s (ems-edge --probe shows what every chip answers)", err);
            return rc;
        }
        if (isfinite(soc0))
            ems_log_info("hw: state of charge %.1f %% from the state file (saved %lld ms UTC)",
                         soc0, (long long)d->saved.soc_saved_ms);
        else
            ems_log_info("hw: no saved state of charge; estimating it from the pack voltage");
        d->io = ems_hwio_io(d->hw);
        return 0;
    }
    ems_plant_config_t pc;
    ems_edge_config_plant(&d->cfg, &pc);
    int rc = ems_simio_init(&d->sim, &pc, d->cfg.sim_speed, d->start_mono_ms);
    if (rc < 0) {
        ems_log_error("sim: the plant configuration is unusable: %s", ems_strerror(rc));
        return rc;
    }
    d->io = ems_simio_io(&d->sim);
    return 0;
}

static int dmn__start_uplink(ems_edge_daemon_t *d)
{
    char err[256];
    ems_edge_ws_target_t t;
    if (ems_edge_config_ws_target(d->cfg.cloud_url, d->cfg.device_id, &t, err, sizeof err) < 0) {
        ems_log_error("uplink: %s", err);
        return EMS_ECONFIG;
    }
    char url[EMS_EDGE_URL_MAX + 400];
    bool v6 = strchr(t.host, ':') != NULL;
    snprintf(url, sizeof url, v6 ? "%s://[%s]:%d%s" : "%s://%s:%d%s", t.tls ? "wss" : "ws", t.host,
             t.port, t.path);
    ems_uplink_config_t uc;
    ems_uplink_config_default(&uc);
    uc.url = url;
    uc.ca_file = d->cfg.ca_file;
    uc.token_file = d->cfg.token_file;
    uc.ping_ms = (unsigned)d->cfg.ws_ping_ms;
    uc.idle_timeout_ms = (unsigned)d->cfg.ws_timeout_ms;
    uc.backoff_min_ms = (uint64_t)d->cfg.reconnect_min_ms;
    uc.backoff_max_ms = (uint64_t)d->cfg.reconnect_max_ms;
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = uv_hrtime() ^ (uint64_t)getpid();
    uc.seed = seed;
    static const ems_uplink_callbacks_t cbs = {dmn__on_ready, dmn__on_message, dmn__on_down};
    int rc = ems_uplink_new(d->loop, &uc, &cbs, d, &d->up);
    if (rc < 0) {
        ems_log_error("uplink: cannot set up the link to %s: %s", url, ems_strerror(rc));
        d->up = NULL;
        return rc;
    }
    if (!t.tls)
        ems_log_warn("uplink: plain ws:// (allow_insecure_ws): no TLS on this link");
    ems_uplink_start(d->up);
    return 0;
}

static int dmn__start_http(ems_edge_daemon_t *d)
{
    if (d->cfg.status_port == 0) {
        if (d->cfg.sim_control)
            ems_log_warn("sim_control is set but status_port is 0: no fault injection endpoint");
        return 0;
    }
    ems_status_http_callbacks_t cbs = {dmn__status_json, dmn__metrics,
                                       d->cfg.sim_control ? dmn__sim : NULL};
    int rc = ems_status_http_start(d->loop, d->cfg.status_bind, (uint16_t)d->cfg.status_port, &cbs,
                                   d, &d->http);
    if (rc < 0) {
        /* The status endpoint is diagnostics: a clash on its port must not
         * stop battery control (and a restart loop would not free the
         * port), so the daemon runs on without it. */
        ems_log_error("status: cannot listen on %s:%d: %s; running without the status endpoint",
                      d->cfg.status_bind, d->cfg.status_port, uv_strerror(rc));
        d->http = NULL;
        return 0;
    }
    ems_log_info("status: listening on http://%s:%u (/status, /metrics%s)", d->cfg.status_bind,
                 (unsigned)ems_status_http_port(d->http),
                 d->cfg.sim_control ? ", POST /sim/fault from loopback" : "");
    return 0;
}

int ems_edge_daemon_start(ems_edge_daemon_t *d)
{
    int rc;
    d->start_mono_ms = dmn__mono_ms();
    d->last_expire_ms = d->start_mono_ms - DMN__EXPIRE_EVERY_MS;
    d->period_ns = (uint64_t)d->cfg.tick_ms * 1000000u;
    if (d->cfg.backend == EMS_EDGE_BACKEND_HW)
        ems_log_info("%s starting: device %s, backend hw (/dev/i2c-%d, %s), tick %lld ms",
                     EMS_EDGE_FIRMWARE, d->cfg.device_id, d->cfg.hw.i2c_bus, d->cfg.hw.gpio_chip,
                     (long long)d->cfg.tick_ms);
    else
        ems_log_info("%s starting: device %s, backend sim (profile %s, seed %llu, speed x%g), "
                     "tick %lld ms",
                     EMS_EDGE_FIRMWARE, d->cfg.device_id,
                     ems_plant_profile_name(d->cfg.plant.profile),
                     (unsigned long long)(d->cfg.plant.has_seed ? d->cfg.plant.seed : 0),
                     d->cfg.sim_speed, (long long)d->cfg.tick_ms);
    if (d->cfg.tick_ms != 1000)
        ems_log_warn("tick_ms = %lld: a TEST-ONLY setting; telemetry is not 1 Hz",
                     (long long)d->cfg.tick_ms);

    ems_fsm_init(&d->fsm, &d->cfg.limits);
    ems_edge_cmd_init(&d->cmd, &d->fsm, dmn__emit, d);
    ems_edge_clock_init(&d->clock);

    /* Synchronous parts first: nothing async is open if they fail. */
    rc = dmn__open_store(d);
    if (rc < 0)
        goto fail;
    rc = dmn__load_state(d);
    if (rc < 0)
        goto fail;
    rc = dmn__open_io(d);
    if (rc < 0)
        goto fail;
    ems_backfill_config_t bc = dmn__bf_config(&d->cfg);
    rc = ems_backfill_init(&d->bf, d->store, &bc);
    if (rc < 0)
        goto fail;
    d->bf_inited = true;

    uv_timer_init(d->loop, &d->tick);
    uv_timer_init(d->loop, &d->bf_timer);
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_int);
    uv_signal_init(d->loop, &d->sig_hup);
    d->tick.data = d->bf_timer.data = d;
    d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
    d->handles_inited = true;
    uv_signal_start(&d->sig_term, dmn__signal_cb, SIGTERM);
    uv_signal_start(&d->sig_int, dmn__signal_cb, SIGINT);
    uv_signal_start(&d->sig_hup, dmn__signal_cb, SIGHUP);

    rc = dmn__start_http(d);
    if (rc < 0)
        goto fail;
    rc = dmn__start_uplink(d);
    if (rc < 0)
        goto fail;

    /* The first deadline falls on a whole UTC second, so the timestamps
     * read .000 (plus the tick's jitter); from then on the schedule is
     * monotonic only, and a clock step does not move it. */
    uint64_t now = uv_hrtime();
    uint64_t wait_ms = d->cfg.tick_ms;
    if (d->cfg.tick_ms == 1000)
        wait_ms = 1000 - (uint64_t)(ems_time_now_ms() % 1000);
    d->deadline_ns = now + wait_ms * 1000000u;
    uv_update_time(d->loop);
    uv_timer_start(&d->tick, dmn__tick_cb, wait_ms, 0);
    return 0;

fail:
    d->exit_status = 1;
    ems_edge_daemon_shutdown(d, "start failed");
    return rc < 0 ? rc : EMS_EIO;
}

int ems_edge_daemon_exit_status(const ems_edge_daemon_t *d)
{
    return d->exit_status;
}

void ems_edge_daemon_free(ems_edge_daemon_t *d)
{
    if (!d)
        return;
    if (!d->finished)
        dmn__finish(d); /* only a daemon that never started gets here unfinished */
    free(d);
}
