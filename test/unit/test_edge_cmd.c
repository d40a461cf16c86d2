/* test_edge_cmd.c: command rules, results and idempotence (edge/cmd.c),
 * against the real state machine and, for the round trips, the simulated
 * plant. */
#include "ems_test.h"

#include "cmd.h"
#include "edge_telemetry.h"
#include "error.h"
#include "fsm.h"
#include "plant.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ harness */

#define MAX_RESULTS 256

typedef struct {
    ems_command_result_t r[MAX_RESULTS];
    int n;
} sink_t;

/* Collects results and checks each is a valid wire message. */
static void collect(void *ud, const ems_command_result_t *r)
{
    sink_t *s = ud;
    if (s->n >= MAX_RESULTS)
        EMS_FAIL("too many results");
    char buf[EMS_RESULT_JSON_MAX];
    int n = ems_command_result_encode(r, buf, sizeof buf);
    if (n < 0)
        EMS_FAIL("result for %s does not encode: %s", r->command_id, ems_strerror(n));
    s->r[s->n++] = *r;
}

static const ems_command_result_t *last(const sink_t *s)
{
    if (s->n == 0)
        EMS_FAIL("no result");
    return &s->r[s->n - 1];
}

static ems_command_t set_mode(const char *id, ems_target_mode_t m, bool has_power, double p)
{
    ems_command_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.command_id, sizeof c.command_id, "%s", id);
    c.action = EMS_ACTION_SET_MODE;
    c.target_mode = m;
    c.has_target_power = has_power;
    c.target_power = p;
    return c;
}

static ems_command_t reset_error(const char *id)
{
    ems_command_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.command_id, sizeof c.command_id, "%s", id);
    c.action = EMS_ACTION_RESET_ERROR;
    return c;
}

static ems_fsm_input_t nominal(int64_t now)
{
    ems_fsm_input_t in;
    memset(&in, 0, sizeof in);
    in.sample.battery_ms = in.sample.temp_ms = in.sample.grid_ms = now;
    in.sample.battery_voltage = 52.0;
    in.sample.battery_soc = 50.0;
    in.sample.battery_temperature = 25.0;
    in.sample.grid_voltage = 230.0;
    in.sample.grid_frequency = 50.0;
    in.cloud_connected = true;
    return in;
}

/* A machine, its command handler and a clock, driven by synthetic samples. */
typedef struct {
    ems_fsm_t fsm;
    ems_edge_cmd_t cmd;
    sink_t sink;
    int64_t mono, utc;
    ems_fsm_output_t out;
} rig_t;

static void rig_init(rig_t *g)
{
    memset(g, 0, sizeof *g);
    ems_fsm_limits_t l;
    ems_fsm_limits_default(&l);
    ems_fsm_init(&g->fsm, &l);
    ems_edge_cmd_init(&g->cmd, &g->fsm, collect, &g->sink);
    g->mono = 1000;
    g->utc = 1769860800000LL; /* 2026-01-31T12:00:00Z */
}

static void rig_tick(rig_t *g, ems_fsm_input_t in)
{
    g->mono += 1000;
    g->utc += 1000;
    in.sample.battery_ms = in.sample.temp_ms = in.sample.grid_ms = g->mono;
    ems_fsm_step(&g->fsm, &in, g->mono, &g->out);
    ems_edge_cmd_after_tick(&g->cmd, &g->out, g->utc);
}

static ems_fsm_input_t with_soc(double soc)
{
    ems_fsm_input_t in = nominal(0);
    in.sample.battery_soc = soc;
    return in;
}

static ems_fsm_input_t with_temp(double t)
{
    ems_fsm_input_t in = nominal(0);
    in.sample.battery_temperature = t;
    return in;
}

#define CHECK_RESULT(r, st, reason_)                                                               \
    do {                                                                                           \
        const ems_command_result_t *r__ = (r);                                                     \
        if (r__->status != (st) ||                                                                 \
            (int)((st) == EMS_RESULT_REJECTED || (st) == EMS_RESULT_FAILED) !=                     \
                (int)r__->has_reason ||                                                            \
            (r__->has_reason && (int)r__->reason != (int)(reason_)))                               \
            EMS_FAIL("%s: got %s/%s (%s), want %s/%s", r__->command_id,                            \
                     ems_result_status_name(r__->status),                                          \
                     r__->has_reason ? ems_result_reason_name(r__->reason) : "-", r__->message,    \
                     ems_result_status_name(st),                                                   \
                     (int)(reason_) >= 0 ? ems_result_reason_name((ems_result_reason_t)(reason_))  \
                                         : "-");                                                   \
    } while (0)

/* ------------------------------------------------------------ rejections */

typedef struct {
    const char *name;
    double soc_before; /* SoC of the tick before the command (-1: no tick) */
    double temp_before;
    ems_command_t cmd;
    int reason; /* -1: accepted */
    const char *message_has;
} reject_case_t;

static void test_rules_table(void)
{
    const int64_t utc0 = 1769860800000LL + 1000;
    reject_case_t cases[] = {
        {"charge above max_charge_w", 50, 25,
         set_mode("c1", EMS_TARGET_MANUAL_CHARGE, true, 5000.5), EMS_REASON_POWER_LIMIT,
         "above the maximum charge power 5000 W"},
        {"discharge above max_discharge_w", 50, 25,
         set_mode("c2", EMS_TARGET_MANUAL_DISCHARGE, true, 9000), EMS_REASON_POWER_LIMIT,
         "target_power 9000 W is above the maximum discharge power 5000 W"},
        {"charge at max_charge_w", 50, 25, set_mode("c3", EMS_TARGET_MANUAL_CHARGE, true, 5000), -1,
         "MANUAL_CHARGE 5000 W"},
        {"discharge at soc_min", 10, 25, set_mode("c4", EMS_TARGET_MANUAL_DISCHARGE, true, 500),
         EMS_REASON_SOC_LIMIT, "at the minimum 10 %"},
        {"discharge below soc_min", 4, 25, set_mode("c5", EMS_TARGET_MANUAL_DISCHARGE, true, 500),
         EMS_REASON_SOC_LIMIT, NULL},
        {"discharge just above soc_min", 10.1, 25,
         set_mode("c6", EMS_TARGET_MANUAL_DISCHARGE, true, 500), -1, NULL},
        {"charge at soc_max", 95, 25, set_mode("c7", EMS_TARGET_MANUAL_CHARGE, true, 500),
         EMS_REASON_SOC_LIMIT, "at the maximum 95 %"},
        {"charge at soc 100", 100, 25, set_mode("c8", EMS_TARGET_MANUAL_CHARGE, true, 500),
         EMS_REASON_SOC_LIMIT, NULL},
        {"discharge at soc_max is fine", 95, 25,
         set_mode("c9", EMS_TARGET_MANUAL_DISCHARGE, true, 500), -1, NULL},
        {"charge at soc_min is fine", 10, 25, set_mode("c10", EMS_TARGET_MANUAL_CHARGE, true, 500),
         -1, NULL},
        {"charge without target_power", 50, 25, set_mode("c11", EMS_TARGET_MANUAL_CHARGE, false, 0),
         EMS_REASON_INVALID, "needs target_power"},
        {"discharge without target_power", 50, 25,
         set_mode("c12", EMS_TARGET_MANUAL_DISCHARGE, false, 0), EMS_REASON_INVALID, NULL},
        {"AUTO ignores an absent power", 50, 25, set_mode("c13", EMS_TARGET_AUTO, false, 0), -1,
         NULL},
        {"MANUAL_IDLE ignores a big power", 50, 25,
         set_mode("c14", EMS_TARGET_MANUAL_IDLE, true, 900000), -1, NULL},
        {"any SET_MODE in ERROR", 50, 70, set_mode("c15", EMS_TARGET_AUTO, false, 0),
         EMS_REASON_IN_ERROR, "OVERHEAT"},
        {"RESET_ERROR outside ERROR", 50, 25, reset_error("c16"), EMS_REASON_NOT_IN_ERROR,
         "not in ERROR"},
        {"RESET_ERROR while hot", 50, 70, reset_error("c17"), EMS_REASON_FAULT_ACTIVE,
         "fault still active: OVERHEAT"},
        {"RESET_ERROR while in the cooling band", 50, 52, reset_error("c18"),
         EMS_REASON_FAULT_ACTIVE, NULL},
        {"expired SET_MODE", 50, 25, set_mode("c19", EMS_TARGET_AUTO, false, 0), EMS_REASON_EXPIRED,
         "expires_at has passed"},
        {"expired RESET_ERROR", 50, 70, reset_error("c20"), EMS_REASON_EXPIRED, NULL},
        {"not yet expired", 50, 25, set_mode("c21", EMS_TARGET_AUTO, false, 0), -1, NULL},
        {"negative power", 50, 25, set_mode("c22", EMS_TARGET_MANUAL_CHARGE, true, -5),
         EMS_REASON_INVALID, NULL},
    };
    cases[18].cmd.has_expires_at = true;
    cases[18].cmd.expires_at_ms = utc0 - 1;
    cases[19].cmd.has_expires_at = true;
    cases[19].cmd.expires_at_ms = utc0 - 5000;
    cases[20].cmd.has_expires_at = true;
    cases[20].cmd.expires_at_ms = utc0;

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        reject_case_t *c = &cases[k];
        rig_t g;
        rig_init(&g);
        ems_fsm_input_t in = with_soc(c->soc_before);
        in.sample.battery_temperature = 70; /* trip first, so "cooling band" is after a trip */
        if (c->temp_before != 25)
            rig_tick(&g, in);
        in.sample.battery_temperature = c->temp_before;
        rig_tick(&g, in);
        uint64_t gen_before = g.fsm.mode_gen;
        ems_edge_cmd_handle(&g.cmd, &c->cmd, g.utc);
        EMS_CHECK_INT(g.sink.n, ==, 1);
        const ems_command_result_t *r = last(&g.sink);
        EMS_CHECK_STR(r->command_id, c->cmd.command_id);
        EMS_CHECK(r->timestamp_ms == g.utc);
        if (c->reason < 0) {
            CHECK_RESULT(r, EMS_RESULT_ACCEPTED, -1);
        } else {
            CHECK_RESULT(r, EMS_RESULT_REJECTED, c->reason);
            /* Rejected means nothing changed. */
            if (g.fsm.mode_gen != gen_before)
                EMS_FAIL("%s: the machine changed", c->name);
        }
        if (c->message_has && (!r->has_message || !strstr(r->message, c->message_has)))
            EMS_FAIL("%s: message \"%s\" lacks \"%s\"", c->name, r->message, c->message_has);
    }
}

/* ------------------------------------------------------------ lifecycle */

/* accepted at once, completed after the next tick, and never before. */
static void test_accept_then_complete(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, nominal(0));
    ems_command_t c = set_mode("cmd_8293", EMS_TARGET_MANUAL_DISCHARGE, true, 500);
    ems_edge_cmd_handle(&g.cmd, &c, g.utc);
    EMS_CHECK_INT(g.sink.n, ==, 1);
    CHECK_RESULT(&g.sink.r[0], EMS_RESULT_ACCEPTED, -1);
    rig_tick(&g, nominal(0));
    EMS_CHECK_INT(g.sink.n, ==, 2);
    CHECK_RESULT(&g.sink.r[1], EMS_RESULT_COMPLETED, -1);
    EMS_CHECK(g.sink.r[1].timestamp_ms == g.utc);
    EMS_CHECK_INT(g.out.state, ==, EMS_STATE_DISCHARGING);
    EMS_CHECK(g.out.setpoint_w == -500);
    rig_tick(&g, nominal(0));
    EMS_CHECK_INT(g.sink.n, ==, 2); /* nothing more */
}

/* A repeated command_id is answered with the stored result and never runs
 * again, whatever it carries now. */
static void test_idempotent_ids(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, nominal(0));
    ems_command_t c = set_mode("cmd_1", EMS_TARGET_MANUAL_CHARGE, true, 1000);
    ems_edge_cmd_handle(&g.cmd, &c, g.utc);
    int64_t t_accept = g.utc;
    uint64_t gen = g.fsm.mode_gen;

    /* Repeat while pending: accepted again, same decision time. */
    ems_edge_cmd_handle(&g.cmd, &c, g.utc + 300);
    EMS_CHECK_INT(g.sink.n, ==, 2);
    CHECK_RESULT(&g.sink.r[1], EMS_RESULT_ACCEPTED, -1);
    EMS_CHECK(g.sink.r[1].timestamp_ms == t_accept);
    EMS_CHECK(g.fsm.mode_gen == gen);

    rig_tick(&g, nominal(0));
    EMS_CHECK_INT(g.sink.n, ==, 3);
    CHECK_RESULT(&g.sink.r[2], EMS_RESULT_COMPLETED, -1);
    EMS_CHECK(ems_command_result_equal(&g.sink.r[2], ems_edge_cmd_lookup(&g.cmd, "cmd_1")));

    /* Someone switches to AUTO; then the old id comes again, even with a
     * different payload: it must not switch back. */
    ems_command_t a = set_mode("cmd_2", EMS_TARGET_AUTO, false, 0);
    ems_edge_cmd_handle(&g.cmd, &a, g.utc);
    rig_tick(&g, nominal(0));
    EMS_CHECK_INT(g.sink.n, ==, 5);
    ems_command_t again = set_mode("cmd_1", EMS_TARGET_MANUAL_DISCHARGE, true, 300);
    ems_edge_cmd_handle(&g.cmd, &again, g.utc + 5000);
    EMS_CHECK_INT(g.sink.n, ==, 6);
    EMS_CHECK(ems_command_result_equal(&g.sink.r[5], &g.sink.r[2]));
    rig_tick(&g, nominal(0));
    EMS_CHECK_INT(g.out.target_mode, ==, EMS_TARGET_AUTO);
    EMS_CHECK_INT(g.sink.n, ==, 6);

    /* A rejected id stays rejected on repeat, even once the rule would pass. */
    ems_command_t big = set_mode("cmd_3", EMS_TARGET_MANUAL_CHARGE, true, 7000);
    ems_edge_cmd_handle(&g.cmd, &big, g.utc);
    CHECK_RESULT(last(&g.sink), EMS_RESULT_REJECTED, EMS_REASON_POWER_LIMIT);
    big.target_power = 100;
    ems_edge_cmd_handle(&g.cmd, &big, g.utc);
    CHECK_RESULT(last(&g.sink), EMS_RESULT_REJECTED, EMS_REASON_POWER_LIMIT);
    EMS_CHECK_INT(ems_fsm_target_mode(&g.fsm), ==, EMS_TARGET_AUTO);
}

/* The memory is bounded: the oldest of more than EMS_EDGE_CMD_HISTORY ids
 * is forgotten, the newest are all remembered. */
static void test_history_bound(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, nominal(0));
    char id[32];
    for (int i = 0; i < EMS_EDGE_CMD_HISTORY + 10; i++) {
        snprintf(id, sizeof id, "id_%d", i);
        ems_command_t c = set_mode(id, EMS_TARGET_MANUAL_IDLE, false, 0);
        ems_edge_cmd_handle(&g.cmd, &c, g.utc);
        rig_tick(&g, nominal(0));
    }
    for (int i = 0; i < EMS_EDGE_CMD_HISTORY + 10; i++) {
        snprintf(id, sizeof id, "id_%d", i);
        bool known = ems_edge_cmd_lookup(&g.cmd, id) != NULL;
        EMS_CHECK_INT(known, ==, i >= 10);
    }
}

/* More commands within one tick than the memory holds: the excess is
 * rejected rather than losing a pending completion. */
static void test_flood_within_one_tick(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, nominal(0));
    char id[32];
    for (int i = 0; i < EMS_EDGE_CMD_HISTORY + 1; i++) {
        snprintf(id, sizeof id, "f_%d", i);
        ems_command_t c = set_mode(id, EMS_TARGET_MANUAL_IDLE, false, 0);
        ems_edge_cmd_handle(&g.cmd, &c, g.utc);
    }
    EMS_CHECK_INT(g.sink.n, ==, EMS_EDGE_CMD_HISTORY + 1);
    CHECK_RESULT(&g.sink.r[EMS_EDGE_CMD_HISTORY - 1], EMS_RESULT_ACCEPTED, -1);
    CHECK_RESULT(last(&g.sink), EMS_RESULT_REJECTED, EMS_REASON_INVALID);
    rig_tick(&g, nominal(0));
    EMS_CHECK_INT(g.sink.n, ==, 2 * EMS_EDGE_CMD_HISTORY + 1);
    for (int i = EMS_EDGE_CMD_HISTORY + 1; i < g.sink.n; i++)
        CHECK_RESULT(&g.sink.r[i], EMS_RESULT_COMPLETED, -1);
}

/* Accepted, then a fault latches ERROR before the tick: failed IN_ERROR. */
static void test_set_mode_fails_on_fault(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, nominal(0));
    ems_command_t c = set_mode("m1", EMS_TARGET_MANUAL_DISCHARGE, true, 500);
    ems_edge_cmd_handle(&g.cmd, &c, g.utc);
    rig_tick(&g, with_temp(80));
    EMS_CHECK_INT(g.sink.n, ==, 2);
    CHECK_RESULT(&g.sink.r[1], EMS_RESULT_FAILED, EMS_REASON_IN_ERROR);
    EMS_CHECK(strstr(g.sink.r[1].message, "OVERHEAT") != NULL);
}

/* RESET_ERROR: accepted, then completed; or failed when the fault is back
 * at the next tick. */
static void test_reset_error_lifecycle(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, with_temp(70));
    rig_tick(&g, with_temp(30));
    ems_command_t r1 = reset_error("r1");
    ems_edge_cmd_handle(&g.cmd, &r1, g.utc);
    CHECK_RESULT(last(&g.sink), EMS_RESULT_ACCEPTED, -1);
    rig_tick(&g, with_temp(30));
    CHECK_RESULT(last(&g.sink), EMS_RESULT_COMPLETED, -1);
    EMS_CHECK_INT(g.out.state, ==, EMS_STATE_IDLE);

    rig_tick(&g, with_temp(-5));
    EMS_CHECK_INT(g.out.state, ==, EMS_STATE_ERROR);
    rig_tick(&g, with_temp(10));
    ems_command_t r2 = reset_error("r2");
    ems_edge_cmd_handle(&g.cmd, &r2, g.utc);
    CHECK_RESULT(last(&g.sink), EMS_RESULT_ACCEPTED, -1);
    rig_tick(&g, with_temp(-3));
    CHECK_RESULT(last(&g.sink), EMS_RESULT_FAILED, EMS_REASON_FAULT_ACTIVE);
    EMS_CHECK(strstr(last(&g.sink)->message, "UNDERTEMP") != NULL);
}

/* Two SET_MODEs before one tick: the later wins, both are settled. */
static void test_superseded(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, nominal(0));
    ems_command_t a = set_mode("a", EMS_TARGET_MANUAL_CHARGE, true, 800);
    ems_command_t b = set_mode("b", EMS_TARGET_MANUAL_DISCHARGE, true, 600);
    ems_edge_cmd_handle(&g.cmd, &a, g.utc);
    ems_edge_cmd_handle(&g.cmd, &b, g.utc);
    rig_tick(&g, nominal(0));
    EMS_CHECK_INT(g.sink.n, ==, 4);
    EMS_CHECK(g.out.setpoint_w == -600);
    for (int i = 2; i < 4; i++) {
        CHECK_RESULT(&g.sink.r[i], EMS_RESULT_COMPLETED, -1);
        if (strcmp(g.sink.r[i].command_id, "a") == 0)
            EMS_CHECK(strstr(g.sink.r[i].message, "superseded by b") != NULL);
    }
}

/* Undecodable commands with a readable id are rejected without being
 * remembered; a known id still gets its stored result. */
static void test_reject_undecodable(void)
{
    rig_t g;
    rig_init(&g);
    rig_tick(&g, nominal(0));
    ems_edge_cmd_reject(&g.cmd, "x1", EMS_REASON_UNSUPPORTED, "action: REBOOT is unknown", g.utc);
    CHECK_RESULT(last(&g.sink), EMS_RESULT_REJECTED, EMS_REASON_UNSUPPORTED);
    EMS_CHECK(ems_edge_cmd_lookup(&g.cmd, "x1") == NULL);
    ems_command_t c = set_mode("x2", EMS_TARGET_MANUAL_IDLE, false, 0);
    ems_edge_cmd_handle(&g.cmd, &c, g.utc);
    ems_edge_cmd_reject(&g.cmd, "x2", EMS_REASON_INVALID, "bad", g.utc);
    CHECK_RESULT(last(&g.sink), EMS_RESULT_ACCEPTED, -1);
}

/* ------------------------------------------------------------ with the plant */

/* The daemon's tick, minus the network: read, step, apply, settle. */
typedef struct {
    ems_plant_t plant;
    rig_t g;
    ems_io_sample_t s;
} loop_t;

static void loop_init(loop_t *L, ems_plant_profile_t profile)
{
    rig_init(&L->g);
    ems_plant_config_t pc;
    ems_plant_config_default(&pc, profile);
    pc.seed = 42;
    EMS_CHECK(ems_plant_init(&L->plant, &pc, L->g.mono) == 0);
}

static void loop_tick(loop_t *L)
{
    rig_t *g = &L->g;
    g->mono += 1000;
    g->utc += 1000;
    ems_io_t *io = ems_plant_io(&L->plant);
    EMS_CHECK(ems_io_read(io, g->mono, &L->s) == 0);
    ems_fsm_input_t in = {.sample = L->s, .cloud_connected = true};
    ems_fsm_step(&g->fsm, &in, g->mono, &g->out);
    EMS_CHECK(ems_io_apply_setpoint(io, g->out.setpoint_w) == 0);
    ems_edge_cmd_after_tick(&g->cmd, &g->out, g->utc);
}

static void telemetry_of(loop_t *L, ems_telemetry_t *t)
{
    ems_edge_telemetry_ctx_t ctx = {
        .device_id = "ems_001", .utc_ms = L->g.utc, .clock_synced = true, .seq = 1};
    ems_edge_telemetry_build(t, &ctx, &L->g.out, &L->s);
    ems_verr_t err;
    if (ems_telemetry_check(t, &err) != 0)
        EMS_FAIL("telemetry invalid: %s: %s", err.path, err.reason);
}

/* The acceptance step: SET_MODE MANUAL_DISCHARGE 500 W, and the next
 * packets show DISCHARGING at about -500 W. */
static void test_manual_discharge_500_on_plant(void)
{
    loop_t L;
    loop_init(&L, EMS_PLANT_SUNNY);
    for (int i = 0; i < 5; i++)
        loop_tick(&L);
    ems_command_t c = set_mode("cmd_8293", EMS_TARGET_MANUAL_DISCHARGE, true, 500);
    ems_edge_cmd_handle(&L.g.cmd, &c, L.g.utc);
    CHECK_RESULT(last(&L.g.sink), EMS_RESULT_ACCEPTED, -1);
    loop_tick(&L); /* the tick that switches: the command is completed */
    CHECK_RESULT(last(&L.g.sink), EMS_RESULT_COMPLETED, -1);
    for (int i = 0; i < 10; i++) {
        loop_tick(&L);
        ems_telemetry_t t;
        telemetry_of(&L, &t);
        EMS_CHECK_INT(t.state, ==, EMS_STATE_DISCHARGING);
        EMS_CHECK_INT(t.mode, ==, EMS_MODE_MANUAL);
        EMS_CHECK_INT(t.target_mode, ==, EMS_TARGET_MANUAL_DISCHARGE);
        EMS_CHECK(t.has_target_power && t.target_power == 500);
        EMS_CHECK_NEAR(t.battery_power, -500, 1.0);
        EMS_CHECK(t.battery_current < 0);
        EMS_CHECK_NEAR(t.battery_power, t.battery_voltage * t.battery_current, 0.051);
    }
}

/* The other acceptance step: an injected overheat gives ERROR;
 * RESET_ERROR is refused while hot and accepted after cooling. */
static void test_overheat_reset_after_cooling_on_plant(void)
{
    loop_t L;
    loop_init(&L, EMS_PLANT_SUNNY);
    for (int i = 0; i < 3; i++)
        loop_tick(&L);
    ems_plant_force_temperature(&L.plant, 70.0);
    loop_tick(&L);
    ems_telemetry_t t;
    telemetry_of(&L, &t);
    EMS_CHECK_INT(t.state, ==, EMS_STATE_ERROR);
    EMS_CHECK_INT(t.error_flags, ==, EMS_FAULT_OVERHEAT);
    /* 0 W is commanded in the tick that saw the fault; the packet of that
     * tick still shows what flowed before it, the next one shows 0 W. */
    EMS_CHECK(L.g.out.setpoint_w == 0.0);
    loop_tick(&L);
    telemetry_of(&L, &t);
    EMS_CHECK(t.battery_power == 0.0 && t.battery_current == 0.0);

    ems_command_t r = reset_error("reset_1");
    ems_edge_cmd_handle(&L.g.cmd, &r, L.g.utc);
    CHECK_RESULT(last(&L.g.sink), EMS_RESULT_REJECTED, EMS_REASON_FAULT_ACTIVE);
    EMS_CHECK(strstr(last(&L.g.sink)->message, "OVERHEAT") != NULL);

    /* Cool down: the plant relaxes toward 25 C with a 120 s time constant,
     * so 70 C reaches 50 C after about 100 s. */
    int waited = 0;
    while (L.s.battery_temperature > 50.0) {
        loop_tick(&L);
        EMS_CHECK_INT(L.g.out.state, ==, EMS_STATE_ERROR);
        EMS_CHECK(++waited < 400);
    }
    EMS_CHECK(waited > 60);
    ems_command_t r2 = reset_error("reset_2");
    ems_edge_cmd_handle(&L.g.cmd, &r2, L.g.utc);
    CHECK_RESULT(last(&L.g.sink), EMS_RESULT_ACCEPTED, -1);
    loop_tick(&L);
    CHECK_RESULT(last(&L.g.sink), EMS_RESULT_COMPLETED, -1);
    EMS_CHECK(L.g.out.state != EMS_STATE_ERROR);
    EMS_CHECK_INT(L.g.out.error_flags, ==, 0);
    /* The old id is still answered with its rejection. */
    ems_edge_cmd_handle(&L.g.cmd, &r, L.g.utc);
    CHECK_RESULT(last(&L.g.sink), EMS_RESULT_REJECTED, EMS_REASON_FAULT_ACTIVE);
}

int main(void)
{
    EMS_RUN(test_rules_table);
    EMS_RUN(test_accept_then_complete);
    EMS_RUN(test_idempotent_ids);
    EMS_RUN(test_history_bound);
    EMS_RUN(test_flood_within_one_tick);
    EMS_RUN(test_set_mode_fails_on_fault);
    EMS_RUN(test_reset_error_lifecycle);
    EMS_RUN(test_superseded);
    EMS_RUN(test_reject_undecodable);
    EMS_RUN(test_manual_discharge_500_on_plant);
    EMS_RUN(test_overheat_reset_after_cooling_on_plant);
    EMS_TEST_END();
}
