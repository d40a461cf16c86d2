/* test_msg_roundtrip.c: property tests of the encoders and decoders.
 *
 * Random valid messages (cloud/emsctl/randmsg.c, seeded, favouring edge
 * values) must survive encode -> decode unchanged, and encoding the decoded
 * message must give the same bytes. The same generator feeds
 * `emsctl _random`, whose output test/suites/10-schema-vectors.py checks
 * against the JSON schemas, so the encoders' output is also schema-valid.
 * The seed is printed, and EMS_SEED=N reruns one stream.
 */
#include "ems_test.h"

#include "../../cloud/emsctl/randmsg.h"
#include "batch.h"
#include "error.h"
#include "message.h"

#define ITERATIONS 20000

static uint64_t seed(void)
{
    const char *s = getenv("EMS_SEED");
    return s ? strtoull(s, NULL, 0) : 20260131;
}

/* decode(encode(x)) == x and encode(decode(encode(x))) is the same text. */
#define ROUND_TRIP(type, gen, encode, decode, equal, cap)                                 \
    do {                                                                                  \
        emsctl_rand_t r;                                                                  \
        emsctl_rand_seed(&r, seed());                                                     \
        static char a[cap], b[cap];                                                       \
        for (int i = 0; i < ITERATIONS; i++) {                                            \
            type x, y;                                                                    \
            ems_verr_t err;                                                               \
            gen(&r, &x);                                                                  \
            int n = encode(&x, a, sizeof a);                                              \
            if (n <= 0)                                                                   \
                EMS_FAIL("iteration %d: encode gave %d", i, n);                           \
            if (decode(a, (size_t)n, &y, &err) != 0)                                      \
                EMS_FAIL("iteration %d: %s: %s in %s", i, err.path, err.reason, a);       \
            if (!equal(&x, &y))                                                           \
                EMS_FAIL("iteration %d: decoded differs from the original: %s", i, a);    \
            if (encode(&y, b, sizeof b) != n || memcmp(a, b, (size_t)n) != 0)             \
                EMS_FAIL("iteration %d: re-encoding differs:\n%s\n%s", i, a, b);          \
        }                                                                                 \
    } while (0)

static void test_telemetry_round_trip(void)
{
    printf("# seed %llu\n", (unsigned long long)seed());
    ROUND_TRIP(ems_telemetry_t, emsctl_rand_telemetry, ems_telemetry_encode,
               ems_telemetry_decode, ems_telemetry_equal, EMS_TELEMETRY_JSON_MAX);
}

static void test_command_round_trip(void)
{
    ROUND_TRIP(ems_command_t, emsctl_rand_command, ems_command_encode, ems_command_decode,
               ems_command_equal, EMS_COMMAND_JSON_MAX);
}

static void test_command_result_round_trip(void)
{
    ROUND_TRIP(ems_command_result_t, emsctl_rand_command_result, ems_command_result_encode,
               ems_command_result_decode, ems_command_result_equal, EMS_RESULT_JSON_MAX);
}

static bool ack_equal(const ems_ack_t *a, const ems_ack_t *b)
{
    return a->count == b->count && memcmp(a->ranges, b->ranges, a->count * sizeof a->ranges[0]) == 0;
}

static void test_ack_round_trip(void)
{
    ROUND_TRIP(ems_ack_t, emsctl_rand_ack, ems_ack_encode, ems_ack_decode, ack_equal,
               EMS_ACK_JSON_MAX);
}

static bool nack_equal(const ems_nack_t *a, const ems_nack_t *b)
{
    return a->has_seq == b->has_seq && a->seq == b->seq && strcmp(a->path, b->path) == 0 &&
           strcmp(a->reason, b->reason) == 0;
}

static void test_nack_round_trip(void)
{
    ROUND_TRIP(ems_nack_t, emsctl_rand_nack, ems_nack_encode, ems_nack_decode, nack_equal,
               EMS_NACK_JSON_MAX);
}

static bool welcome_equal(const ems_welcome_t *a, const ems_welcome_t *b)
{
    return strcmp(a->device_id, b->device_id) == 0 && a->server_time_ms == b->server_time_ms;
}

static void test_welcome_round_trip(void)
{
    ROUND_TRIP(ems_welcome_t, emsctl_rand_welcome, ems_welcome_encode, ems_welcome_decode,
               welcome_equal, EMS_WELCOME_JSON_MAX);
}

static bool info_equal(const ems_device_info_t *a, const ems_device_info_t *b)
{
#define SAME(f) (a->has_##f == b->has_##f && (!a->has_##f || memcmp(&a->f, &b->f, sizeof a->f) == 0))
    return a->has_firmware == b->has_firmware &&
           (!a->has_firmware || strcmp(a->firmware, b->firmware) == 0) && SAME(capacity_wh) &&
           SAME(max_charge_w) && SAME(max_discharge_w) && SAME(soc_min) && SAME(soc_max);
#undef SAME
}

static void test_device_info_round_trip(void)
{
    ROUND_TRIP(ems_device_info_t, emsctl_rand_device_info, ems_device_info_encode,
               ems_device_info_decode, info_equal, EMS_DEVICE_INFO_JSON_MAX);
}

/* The generic path (classify, then validate) accepts every encoded message,
 * as a daemon receiving it would. */
static void test_classified_by_kind(void)
{
    emsctl_rand_t r;
    emsctl_rand_seed(&r, seed());
    char buf[EMS_RESULT_JSON_MAX];
    for (int i = 0; i < 2000; i++) {
        ems_telemetry_t t;
        ems_command_t c;
        ems_command_result_t cr;
        ems_msg_kind_t kind;
        ems_verr_t err;
        emsctl_rand_telemetry(&r, &t);
        int n = ems_telemetry_encode(&t, buf, sizeof buf);
        EMS_CHECK_INT(ems_message_check_text(buf, (size_t)n, EMS_MSG_UNKNOWN, &kind, &err), ==, 0);
        EMS_CHECK_INT(kind, ==, EMS_MSG_TELEMETRY);
        emsctl_rand_command(&r, &c);
        n = ems_command_encode(&c, buf, sizeof buf);
        EMS_CHECK_INT(ems_message_check_text(buf, (size_t)n, EMS_MSG_UNKNOWN, &kind, &err), ==, 0);
        EMS_CHECK_INT(kind, ==, EMS_MSG_COMMAND);
        emsctl_rand_command_result(&r, &cr);
        n = ems_command_result_encode(&cr, buf, sizeof buf);
        EMS_CHECK_INT(ems_message_check_text(buf, (size_t)n, EMS_MSG_UNKNOWN, &kind, &err), ==, 0);
        EMS_CHECK_INT(kind, ==, EMS_MSG_COMMAND_RESULT);
    }
}

/* Every prefix of a valid packet is refused with a whole-message error,
 * never a crash or an accepted half packet. */
static void test_truncations_refused(void)
{
    emsctl_rand_t r;
    emsctl_rand_seed(&r, seed() + 1);
    char buf[EMS_TELEMETRY_JSON_MAX];
    for (int i = 0; i < 50; i++) {
        ems_telemetry_t t, out;
        ems_verr_t err;
        emsctl_rand_telemetry(&r, &t);
        int n = ems_telemetry_encode(&t, buf, sizeof buf);
        for (int len = 0; len < n; len++) {
            if (ems_telemetry_decode(buf, (size_t)len, &out, &err) != EMS_EINVAL)
                EMS_FAIL("prefix of %d bytes accepted: %.*s", len, len, buf);
            EMS_CHECK_STR(err.path, "");
        }
    }
}

int main(void)
{
    EMS_RUN(test_telemetry_round_trip);
    EMS_RUN(test_command_round_trip);
    EMS_RUN(test_command_result_round_trip);
    EMS_RUN(test_ack_round_trip);
    EMS_RUN(test_nack_round_trip);
    EMS_RUN(test_welcome_round_trip);
    EMS_RUN(test_device_info_round_trip);
    EMS_RUN(test_classified_by_kind);
    EMS_RUN(test_truncations_refused);
    EMS_TEST_END();
}
