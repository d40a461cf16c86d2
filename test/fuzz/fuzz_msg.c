/* fuzz_msg.c: libFuzzer target for every wire-message decoder.
 *
 * Each input is parsed once and validated as every kind (and classified),
 * fed to the batch decoder with a callback, and to the timestamp parser.
 * Beyond "no crash, no leak, no undefined behaviour", it checks properties:
 * a packet or command the decoder accepts must encode, and decode again to
 * the same value; a timestamp that parses must format and parse back to the
 * same instant. The one-pass telemetry decoder (ems_telemetry_scan) must
 * never accept what the full one refuses, and must decode the same struct.
 * Seed corpus: test/vectors (test/suites/15-fuzz.sh).
 */
#include "batch.h"
#include "command.h"
#include "error.h"
#include "jread.h"
#include "message.h"
#include "telemetry.h"
#include "timefmt.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void on_item(void *ctx, const ems_batch_item_t *item)
{
    size_t *seen = ctx;
    (*seen)++;
    if (!item->packet && !item->err)
        abort(); /* every packet is either accepted or explained */
}

static void check_telemetry(const json_t *root)
{
    ems_telemetry_t t, back;
    ems_verr_t err;
    char buf[EMS_TELEMETRY_JSON_MAX];
    if (ems_telemetry_from_json(root, &t, &err) != 0)
        return;
    int n = ems_telemetry_encode(&t, buf, sizeof buf);
    if (n <= 0 || ems_telemetry_decode(buf, (size_t)n, &back, &err) != 0 ||
        !ems_telemetry_equal(&t, &back))
        abort();
}

/* The fast path either leaves the text to the full decoder or agrees with
 * it: the gateway's full path is parse, classify as telemetry, decode. */
static void check_scan(const uint8_t *data, size_t size, const json_t *root)
{
    ems_telemetry_t fast, full;
    ems_verr_t err;
    int rc = ems_telemetry_scan((const char *)data, size, &fast);
    if (rc == EMS_EAGAIN)
        return;
    memset(&full, 0, sizeof full);
    if (rc != 0 || !root || ems_message_identify(root, &err) != EMS_MSG_TELEMETRY ||
        ems_telemetry_from_json(root, &full, &err) != 0 || !ems_telemetry_equal(&fast, &full) ||
        memcmp(&fast, &full, sizeof fast) != 0)
        abort();
}

static void check_command(const json_t *root)
{
    ems_command_t c, back;
    ems_verr_t err;
    char buf[EMS_COMMAND_JSON_MAX];
    if (ems_command_from_json(root, &c, &err) != 0)
        return;
    int n = ems_command_encode(&c, buf, sizeof buf);
    if (n <= 0 || ems_command_decode(buf, (size_t)n, &back, &err) != 0 ||
        !ems_command_equal(&c, &back))
        abort();
}

static void check_time(const uint8_t *data, size_t size)
{
    int64_t ms, again;
    char buf[EMS_TIME_STR_MAX];
    if (ems_time_parse((const char *)data, size, &ms) != 0)
        return;
    if (ems_time_format(ms, buf, sizeof buf) != 24 || ems_time_parse(buf, 24, &again) != 0 ||
        again != ms)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ems_verr_t err;
    check_time(data, size);
    json_t *root = ems_jr_parse((const char *)data, size, &err);
    check_scan(data, size, root);
    if (!root)
        return 0;
    ems_message_identify(root, &err);
    for (int k = 1; k < EMS_MSG_COUNT; k++)
        ems_message_validate((ems_msg_kind_t)k, root, &err);
    size_t seen = 0;
    ems_batch_from_json(root, on_item, &seen, &err);
    check_telemetry(root);
    check_command(root);
    json_decref(root);
    return 0;
}
