/* randmsg.c: random valid wire messages (see randmsg.h). */
#include "randmsg.h"

#include "batch.h"
#include "emsctl.h"
#include "error.h"
#include "message.h"
#include "timefmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void emsctl_rand_seed(emsctl_rand_t *r, uint64_t seed)
{
    /* splitmix64 of the seed, so nearby seeds give unrelated streams. */
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    r->s = (z ^ (z >> 31)) | 1;
}

uint64_t emsctl_rand_u64(emsctl_rand_t *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

uint64_t emsctl_rand_below(emsctl_rand_t *r, uint64_t n)
{
    return emsctl_rand_u64(r) % n;
}

static bool chance(emsctl_rand_t *r, unsigned percent)
{
    return emsctl_rand_below(r, 100) < percent;
}

double emsctl_rand_double(emsctl_rand_t *r, double lo, double hi)
{
    double u = (double)(emsctl_rand_u64(r) >> 11) * 0x1p-53;
    double v = lo + (hi - lo) * u;
    switch (emsctl_rand_below(r, 10)) {
    case 0: return lo;
    case 1: return hi;
    case 2: return lo <= 0 && hi >= 0 ? 0.0 : v;
    case 3: return lo <= 0 && hi >= 0 ? -0.0 : v;
    case 4: v = round(v * 10) / 10; break; /* what the edge sends */
    case 5: v = round(v); break;
    default: break; /* a full 53-bit value: needs up to 17 digits */
    }
    return v < lo ? lo : v > hi ? hi : v;
}

static void rand_ident(emsctl_rand_t *r, char *out, size_t max, bool colon)
{
    static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-:";
    size_t n = chance(r, 10) ? max : 1 + emsctl_rand_below(r, chance(r, 80) ? 12 : max);
    for (size_t i = 0; i < n; i++)
        out[i] = set[emsctl_rand_below(r, sizeof set - (colon ? 1 : 2))];
    out[n] = '\0';
}

static int64_t rand_time(emsctl_rand_t *r)
{
    if (chance(r, 20))
        return EMS_TIME_MIN_MS + (int64_t)emsctl_rand_below(r, EMS_TIME_MAX_MS - EMS_TIME_MIN_MS + 1);
    return 1769860800000LL + (int64_t)emsctl_rand_below(r, 86400000LL * 365);
}

/* Appends one code point as UTF-8 (no NUL, no surrogates). */
static size_t put_utf8(char *p, uint32_t c)
{
    if (c < 0x80)
        return p[0] = (char)c, 1;
    if (c < 0x800)
        return p[0] = (char)(0xC0 | c >> 6), p[1] = (char)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        p[0] = (char)(0xE0 | c >> 12), p[1] = (char)(0x80 | (c >> 6 & 0x3F));
        return p[2] = (char)(0x80 | (c & 0x3F)), 3;
    }
    p[0] = (char)(0xF0 | c >> 18), p[1] = (char)(0x80 | (c >> 12 & 0x3F));
    p[2] = (char)(0x80 | (c >> 6 & 0x3F)), p[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Text of 0..max characters mixing ASCII, escapes and multi-byte UTF-8. */
static void rand_text(emsctl_rand_t *r, char *out, size_t max)
{
    static const uint32_t odd[] = {'"', '\\', '\n', '\t', 0x01, 0x1F, 0x7F, 0xE9, 0x20AC, 0xFFFD, 0x1F600};
    size_t n = chance(r, 10) ? max : emsctl_rand_below(r, max + 1), len = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = chance(r, 80) ? 0x20 + (uint32_t)emsctl_rand_below(r, 0x5F)
                                   : odd[emsctl_rand_below(r, sizeof odd / sizeof odd[0])];
        len += put_utf8(out + len, c);
    }
    out[len] = '\0';
}

static void rand_status(emsctl_rand_t *r, ems_telemetry_t *t)
{
    t->state = (ems_state_t)emsctl_rand_below(r, EMS_STATE_COUNT);
    t->error_flags = chance(r, 50) ? 0 : (uint32_t)emsctl_rand_below(r, EMS_FAULT_ALL + 1);
    t->has_wifi_strength = chance(r, 80);
    t->wifi_strength = t->has_wifi_strength ? -(int)emsctl_rand_below(r, 128) : 0;
    t->has_target_mode = chance(r, 50);
    t->target_mode = (ems_target_mode_t)emsctl_rand_below(r, EMS_TARGET_COUNT);
    t->mode = ems_target_mode_to_mode(t->target_mode);
    if (!t->has_target_mode)
        t->target_mode = EMS_TARGET_AUTO;
    t->has_target_power = chance(r, 30);
    t->target_power = t->has_target_power ? emsctl_rand_double(r, 0, 1e6) : 0;
}

void emsctl_rand_telemetry(emsctl_rand_t *r, ems_telemetry_t *t)
{
    memset(t, 0, sizeof *t);
    rand_ident(r, t->device_id, EMS_DEVICE_ID_MAX, false);
    t->timestamp_ms = rand_time(r);
    rand_status(r, t);
    t->battery_voltage = emsctl_rand_double(r, 0, 1000);
    t->battery_current = emsctl_rand_double(r, -1e4, 1e4);
    t->battery_power = emsctl_rand_double(r, -1e6, 1e6);
    t->battery_soc = emsctl_rand_double(r, 0, 100);
    if ((t->has_battery_temperature = chance(r, 50)))
        t->battery_temperature = emsctl_rand_double(r, -50, 150);
    t->grid_voltage = emsctl_rand_double(r, 0, 1000);
    t->grid_power = emsctl_rand_double(r, -1e7, 1e7);
    t->grid_frequency = emsctl_rand_double(r, 0, 100);
    if ((t->has_seq = chance(r, 70)))
        t->seq = chance(r, 10) ? EMS_SEQ_MAX : emsctl_rand_below(r, EMS_SEQ_MAX + 1);
    if ((t->has_clock_synced = chance(r, 50)))
        t->clock_synced = chance(r, 50);
    if ((t->has_backfill = chance(r, 30)))
        t->backfill = chance(r, 50);
    if ((t->has_backlog = chance(r, 30)))
        t->backlog = emsctl_rand_below(r, chance(r, 10) ? EMS_SEQ_MAX + 1 : 100000);
    if ((t->has_energy = chance(r, 50))) {
        /* whole mWh, as the edge sends them */
        t->energy_battery_charged_wh = (double)emsctl_rand_below(r, 1000000000) / 1000;
        t->energy_battery_discharged_wh = (double)emsctl_rand_below(r, 1000000000) / 1000;
        t->energy_grid_import_wh = chance(r, 10) ? EMS_ENERGY_WH_MAX : emsctl_rand_double(r, 0, 1e9);
        t->energy_grid_export_wh = (double)emsctl_rand_below(r, 1000000000) / 1000;
        t->energy_since_ms = rand_time(r);
    }
}

void emsctl_rand_command(emsctl_rand_t *r, ems_command_t *c)
{
    memset(c, 0, sizeof *c);
    rand_ident(r, c->command_id, EMS_COMMAND_ID_MAX, true);
    c->action = (ems_action_t)emsctl_rand_below(r, EMS_ACTION_COUNT);
    if (c->action == EMS_ACTION_SET_MODE) {
        c->target_mode = (ems_target_mode_t)emsctl_rand_below(r, EMS_TARGET_COUNT);
        c->has_target_power = c->target_mode == EMS_TARGET_MANUAL_CHARGE ||
                              c->target_mode == EMS_TARGET_MANUAL_DISCHARGE || chance(r, 30);
        if (c->has_target_power)
            c->target_power = emsctl_rand_double(r, 0, EMS_COMMAND_POWER_MAX);
    }
    if ((c->has_expires_at = chance(r, 50)))
        c->expires_at_ms = rand_time(r);
}

void emsctl_rand_command_result(emsctl_rand_t *r, ems_command_result_t *c)
{
    memset(c, 0, sizeof *c);
    rand_ident(r, c->command_id, EMS_COMMAND_ID_MAX, true);
    c->status = (ems_result_status_t)emsctl_rand_below(r, EMS_RESULT_COUNT);
    c->has_reason = c->status == EMS_RESULT_REJECTED || c->status == EMS_RESULT_FAILED ||
                    chance(r, 20);
    if (c->has_reason)
        c->reason = (ems_result_reason_t)emsctl_rand_below(r, EMS_REASON_COUNT);
    if ((c->has_message = chance(r, 60)))
        rand_text(r, c->message, EMS_RESULT_MESSAGE_MAX);
    c->timestamp_ms = rand_time(r);
}

void emsctl_rand_ack(emsctl_rand_t *r, ems_ack_t *a)
{
    ems_ack_init(a);
    size_t want = 1 + emsctl_rand_below(r, chance(r, 10) ? EMS_ACK_RANGES_MAX : 8);
    uint64_t seq = chance(r, 10) ? EMS_SEQ_MAX - 10000 : emsctl_rand_below(r, 1u << 20);
    while (a->count < want && seq <= EMS_SEQ_MAX) {
        uint64_t len = emsctl_rand_below(r, 20);
        for (uint64_t k = 0; k <= len && seq <= EMS_SEQ_MAX; k++)
            ems_ack_add(a, seq++);
        seq += 1 + emsctl_rand_below(r, 5); /* a gap keeps ranges apart */
    }
}

void emsctl_rand_nack(emsctl_rand_t *r, ems_nack_t *n)
{
    memset(n, 0, sizeof *n);
    if ((n->has_seq = chance(r, 70)))
        n->seq = emsctl_rand_below(r, EMS_SEQ_MAX + 1);
    rand_text(r, n->path, chance(r, 20) ? 0 : EMS_NACK_PATH_MAX);
    do
        rand_text(r, n->reason, EMS_NACK_REASON_MAX);
    while (!n->reason[0]);
}

void emsctl_rand_welcome(emsctl_rand_t *r, ems_welcome_t *w)
{
    memset(w, 0, sizeof *w);
    rand_ident(r, w->device_id, EMS_DEVICE_ID_MAX, false);
    w->server_time_ms = rand_time(r);
}

void emsctl_rand_device_info(emsctl_rand_t *r, ems_device_info_t *d)
{
    memset(d, 0, sizeof *d);
    if ((d->has_firmware = chance(r, 70)))
        rand_text(r, d->firmware, EMS_FIRMWARE_MAX);
    if ((d->has_capacity_wh = chance(r, 70)))
        d->capacity_wh = emsctl_rand_double(r, 0, 1e6);
    if ((d->has_max_charge_w = chance(r, 70)))
        d->max_charge_w = emsctl_rand_double(r, 0, 1e5);
    if ((d->has_max_discharge_w = chance(r, 70)))
        d->max_discharge_w = emsctl_rand_double(r, 0, 1e5);
    double a = emsctl_rand_double(r, 0, 100), b = emsctl_rand_double(r, 0, 100);
    d->soc_min = a < b ? a : b; /* soc_min <= soc_max */
    d->soc_max = a < b ? b : a;
    d->has_soc_min = chance(r, 70);
    d->has_soc_max = chance(r, 70);
}

/* ------------------------------------------------------------ emsctl _random */

static int rand_batch(emsctl_rand_t *r, char *buf, size_t cap)
{
    size_t n = 1 + emsctl_rand_below(r, chance(r, 10) ? EMS_BATCH_MAX : 5);
    ems_telemetry_t *pkts = calloc(n, sizeof *pkts);
    if (!pkts)
        return EMS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        emsctl_rand_telemetry(r, &pkts[i]);
        pkts[i].has_seq = true;
    }
    int rc = ems_batch_encode(pkts, n, buf, cap);
    free(pkts);
    return rc;
}

/* Encodes one random message of `kind` into buf. */
static int rand_encoded(emsctl_rand_t *r, ems_msg_kind_t kind, char *buf, size_t cap)
{
    union {
        ems_telemetry_t t;
        ems_command_t c;
        ems_command_result_t cr;
        ems_ack_t a;
        ems_nack_t n;
        ems_welcome_t w;
        ems_device_info_t d;
    } m;
    switch (kind) {
    case EMS_MSG_TELEMETRY: return emsctl_rand_telemetry(r, &m.t), ems_telemetry_encode(&m.t, buf, cap);
    case EMS_MSG_COMMAND: return emsctl_rand_command(r, &m.c), ems_command_encode(&m.c, buf, cap);
    case EMS_MSG_COMMAND_RESULT:
        return emsctl_rand_command_result(r, &m.cr), ems_command_result_encode(&m.cr, buf, cap);
    case EMS_MSG_ACK: return emsctl_rand_ack(r, &m.a), ems_ack_encode(&m.a, buf, cap);
    case EMS_MSG_NACK: return emsctl_rand_nack(r, &m.n), ems_nack_encode(&m.n, buf, cap);
    case EMS_MSG_WELCOME: return emsctl_rand_welcome(r, &m.w), ems_welcome_encode(&m.w, buf, cap);
    case EMS_MSG_TELEMETRY_BATCH: return rand_batch(r, buf, cap);
    case EMS_MSG_DEVICE_INFO:
        return emsctl_rand_device_info(r, &m.d), ems_device_info_encode(&m.d, buf, cap);
    default: return -1;
    }
}

int emsctl_random_main(int argc, char **argv)
{
    ems_msg_kind_t kind;
    if (argc != 4 || ems_message_kind_parse(argv[1], &kind) < 0) {
        fprintf(stderr, "usage: emsctl _random KIND SEED COUNT\n"
                        "  KIND: telemetry command command-result ack nack welcome "
                        "telemetry-batch device-info\n");
        return EMSCTL_USAGE;
    }
    emsctl_rand_t r;
    emsctl_rand_seed(&r, strtoull(argv[2], NULL, 0));
    long count = strtol(argv[3], NULL, 0);
    char *buf = malloc(EMS_BATCH_JSON_MAX);
    int rc = buf ? EMSCTL_OK : EMSCTL_FAIL;
    for (long i = 0; i < count && rc == EMSCTL_OK; i++) {
        int n = rand_encoded(&r, kind, buf, EMS_BATCH_JSON_MAX);
        if (n < 0) {
            fprintf(stderr, "emsctl _random: cannot generate %s (%d)\n", argv[1], n);
            rc = n == -1 ? EMSCTL_USAGE : EMSCTL_FAIL;
            break;
        }
        fwrite(buf, 1, (size_t)n, stdout);
        putchar('\n');
    }
    free(buf);
    return fflush(stdout) == 0 ? rc : EMSCTL_FAIL;
}
