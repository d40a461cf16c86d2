/* test_msg_telemetry_scan.c: the one-pass telemetry decoder
 * (ems_telemetry_scan, common/telemetry_scan.c) against the full one.
 *
 * The property under test: the scanner either answers EMS_EAGAIN ("use the
 * full decoder"), or it accepts a text that the gateway's jansson path
 * (parse, classify as telemetry, ems_telemetry_from_json) accepts too, with
 * the very same struct, byte for byte. Every test vector, hand-written edge
 * cases and random numbers are checked; the common packets must really be
 * taken by the fast path, or the gateway would gain nothing.
 */
#include "ems_test.h"

#include "error.h"
#include "jread.h"
#include "message.h"
#include "telemetry.h"

#include <dirent.h>
#include <sys/stat.h>

/* The seed's packet (spec "Upstream Payload"), compact. */
static const char SEED[] =
    "{\"device_id\":\"ems_001\",\"timestamp\":\"2026-01-31T12:00:01Z\","
    "\"system_status\":{\"state\":\"CHARGING\",\"mode\":\"AUTO\",\"error_flags\":[],"
    "\"wifi_strength\":-45},"
    "\"battery\":{\"voltage\":53.2,\"current\":10.5,\"power\":558.6,\"soc\":85},"
    "\"grid\":{\"voltage\":230.1,\"power\":-200,\"frequency\":50.0}}";

/* What the edge sends every second: every member the encoder writes. */
static const char TYPICAL[] =
    "{\"device_id\":\"ems_001\",\"timestamp\":\"2026-12-07T23:49:21.123Z\","
    "\"system_status\":{\"state\":\"DISCHARGING\",\"mode\":\"MANUAL\","
    "\"error_flags\":[\"OVERHEAT\",\"GRID_FAULT\"],\"wifi_strength\":-61,"
    "\"target_mode\":\"MANUAL_DISCHARGE\",\"target_power\":2500.5},"
    "\"battery\":{\"voltage\":51.87,\"current\":-48.21,\"power\":-2500.6,\"soc\":63.4,"
    "\"temperature\":27.3},"
    "\"grid\":{\"voltage\":229.6,\"power\":-1834.2,\"frequency\":49.98},"
    "\"seq\":1234567,\"clock_synced\":true,\"backfill\":false,\"backlog\":0,"
    "\"energy\":{\"battery_charged_wh\":123456.789,\"battery_discharged_wh\":98765.432,"
    "\"grid_import_wh\":4567890.123,\"grid_export_wh\":0.5,"
    "\"since\":\"2026-01-01T00:00:00.000Z\"}}";

/* The gateway's full path: 0 accepted, EMS_EINVAL refused. */
static int reference(const char *text, size_t len, ems_telemetry_t *t)
{
    ems_verr_t err;
    json_t *root = ems_jr_parse(text, len, &err);
    if (!root)
        return EMS_EINVAL;
    int rc = EMS_EINVAL;
    if (ems_message_identify(root, &err) == EMS_MSG_TELEMETRY)
        rc = ems_telemetry_from_json(root, t, &err);
    json_decref(root);
    return rc;
}

/* Checks the property on one text; returns true when the fast path took it. */
static bool agree_n(const char *text, size_t len)
{
    ems_telemetry_t fast, full;
    memset(&full, 0, sizeof full);
    int rc = ems_telemetry_scan(text, len, &fast);
    if (rc != 0 && rc != EMS_EAGAIN)
        EMS_FAIL("scan returned %d for: %.*s", rc, (int)len, text);
    if (rc != 0)
        return false;
    if (reference(text, len, &full) != 0)
        EMS_FAIL("fast path accepted what the full decoder refuses: %.*s", (int)len, text);
    /* equal() skips the values behind false has_* flags; memcmp does not
     * (both start from a zeroed struct, so the padding is zero too). */
    if (!ems_telemetry_equal(&fast, &full) || memcmp(&fast, &full, sizeof fast) != 0)
        EMS_FAIL("fast path decoded another struct than the full decoder: %.*s", (int)len, text);
    return true;
}

static bool agree(const char *text)
{
    return agree_n(text, strlen(text));
}

/* SEED with `from` replaced by `to`, in a static buffer. */
static const char *edit(const char *base, const char *from, const char *to)
{
    static char text[8192];
    const char *at = strstr(base, from);
    if (!at)
        EMS_FAIL("fixture text %s not in the packet", from);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    return text;
}

/* The full decoder accepts `text`, the fast path leaves it to it. */
static void falls_back(const char *text)
{
    ems_telemetry_t t;
    if (agree(text))
        EMS_FAIL("expected a fallback, the fast path took: %s", text);
    if (reference(text, strlen(text), &t) != 0)
        EMS_FAIL("the full decoder refuses: %s", text);
}

static void test_common_packets_are_fast(void)
{
    EMS_CHECK(agree(SEED));
    EMS_CHECK(agree(TYPICAL));
    /* What the edge's encoder writes, for a few shapes of packet. */
    ems_telemetry_t t;
    EMS_CHECK_INT(ems_telemetry_scan(TYPICAL, strlen(TYPICAL), &t), ==, 0);
    char buf[EMS_TELEMETRY_JSON_MAX];
    for (int shape = 0; shape < 4; shape++) {
        t.has_energy = shape & 1;
        t.has_wifi_strength = shape & 2;
        t.has_target_power = shape != 3;
        int n = ems_telemetry_encode(&t, buf, sizeof buf);
        EMS_CHECK(n > 0);
        ems_telemetry_t back;
        EMS_CHECK_INT(ems_telemetry_scan(buf, (size_t)n, &back), ==, 0);
        EMS_CHECK(agree_n(buf, (size_t)n));
        EMS_CHECK(ems_telemetry_equal(&t, &back));
    }
    /* The values themselves, not only agreement. */
    EMS_CHECK_INT(ems_telemetry_scan(SEED, strlen(SEED), &t), ==, 0);
    EMS_CHECK_STR(t.device_id, "ems_001");
    EMS_CHECK(t.battery_voltage == 53.2 && t.grid_power == -200.0 && t.battery_soc == 85.0);
    EMS_CHECK(t.has_wifi_strength && t.wifi_strength == -45);
    EMS_CHECK(!t.has_seq && !t.has_energy && !t.has_target_mode);
    EMS_CHECK(t.target_mode == EMS_TARGET_AUTO);
}

/* Reads a whole file into a new buffer (caller frees); NULL on error. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Every vector of every kind, valid or not, in `dir`; counts the ones the
 * fast path took, and names them in *fast_names (space-separated). */
static int check_dir(const char *dir, int *files, char *fast_names, size_t cap)
{
    DIR *d = opendir(dir);
    int fast = 0;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (nl < 6 || strcmp(e->d_name + nl - 5, ".json") != 0)
            continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = 0;
        char *text = slurp(path, &len);
        if (!text)
            EMS_FAIL("cannot read %s", path);
        (*files)++;
        if (agree_n(text, len)) {
            fast++;
            size_t used = strlen(fast_names);
            snprintf(fast_names + used, cap - used, " %s", e->d_name);
        }
        free(text);
    }
    closedir(d);
    return fast;
}

static void test_vectors(void)
{
    const char *root = getenv("EMS_ROOT") ? getenv("EMS_ROOT") : ".";
    char vec[512], dir[1024];
    snprintf(vec, sizeof vec, "%s/test/vectors", root);
    DIR *d = opendir(vec);
    if (!d)
        EMS_FAIL("no vectors at %s (set EMS_ROOT)", vec);
    int files = 0, fast_other = 0;
    static char names[16384], valid_fast[16384], ignore[16384];
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "telemetry") == 0)
            continue;
        for (int v = 0; v < 2; v++) {
            snprintf(dir, sizeof dir, "%s/%s/%s", vec, e->d_name, v ? "valid" : "invalid");
            fast_other += check_dir(dir, &files, ignore, sizeof ignore);
        }
    }
    closedir(d);
    snprintf(dir, sizeof dir, "%s/telemetry/invalid", vec);
    int fast_invalid = check_dir(dir, &files, names, sizeof names);
    snprintf(dir, sizeof dir, "%s/telemetry/valid", vec);
    int valid_files = files;
    int fast_valid = check_dir(dir, &files, valid_fast, sizeof valid_fast);
    valid_files = files - valid_files;
    printf("# %d vectors; fast path took %d of %d valid telemetry vectors:%s\n", files,
           fast_valid, valid_files, valid_fast);
    EMS_CHECK(files > 250);
    EMS_CHECK_INT(fast_invalid, ==, 0); /* agree_n would have failed already */
    EMS_CHECK_INT(fast_other, ==, 0);   /* other kinds: never telemetry */
    /* The common shapes must be fast, not silently left to jansson. */
    static const char *const must[] = {
        "seed.json",         "protocol-example.json",    "all-extensions.json",
        "energy.json",       "energy-max.json",          "wifi-null.json",
        "bounds-max.json",   "bounds-min.json",          "all-error-flags.json",
        "device-id-64.json", "integers-written-as-reals.json", "soc-many-decimals.json",
        "timestamp-9-fraction-digits.json",
    };
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
        char word[128];
        snprintf(word, sizeof word, " %s", must[i]);
        if (!strstr(valid_fast, word))
            EMS_FAIL("valid vector %s was not taken by the fast path", must[i]);
    }
    /* Unknown members are always left to the full decoder. */
    EMS_CHECK(!strstr(valid_fast, "unknown-members-ignored.json"));
}

static void test_duplicates(void)
{
    EMS_CHECK(!agree(edit(SEED, "\"grid\":", "\"seq\":1,\"seq\":2,\"grid\":")));
    EMS_CHECK(!agree(edit(SEED, "\"soc\":85", "\"soc\":85,\"soc\":85")));
    EMS_CHECK(!agree(edit(SEED, "\"mode\":\"AUTO\"", "\"mode\":\"AUTO\",\"mode\":\"AUTO\"")));
    EMS_CHECK(!agree(edit(SEED, "\"battery\":{", "\"battery\":{},\"battery\":{")));
    EMS_CHECK(!agree(edit(SEED, "[]", "[\"OVERHEAT\",\"OVERHEAT\"]")));
    EMS_CHECK(agree(edit(SEED, "[]", "[\"OVERHEAT\",\"UNDERTEMP\"]")));
}

static void test_escapes_and_strings(void)
{
    /* Accepted by the full decoder, left to it. */
    falls_back(edit(SEED, "\"ems_001\"", "\"ems\\u005f001\""));
    falls_back(edit(SEED, "\"device_id\"", "\"device\\u005fid\""));
    falls_back(edit(SEED, "\"AUTO\"", "\"\\u0041UTO\""));
    falls_back(edit(SEED, "\"grid\":", "\"note\":\"caf\xc3\xa9\",\"grid\":"));
    /* Refused by the full decoder. */
    EMS_CHECK(!agree(edit(SEED, "\"ems_001\"", "\"ems_001\\u0000\"")));
    EMS_CHECK(!agree(edit(SEED, "\"ems_001\"", "\"ems\t001\"")));
    EMS_CHECK(!agree(edit(SEED, "\"ems_001\"", "\"ems 001\"")));
    EMS_CHECK(!agree(edit(SEED, "\"ems_001\"", "\"\"")));
    EMS_CHECK(!agree(edit(SEED, "\"ems_001\"", "\"ems/001\"")));
    EMS_CHECK(!agree(edit(SEED, "\"AUTO\"", "\"auto\"")));
    EMS_CHECK(!agree(edit(SEED, "\"CHARGING\"", "\"CHARGING \"")));
    EMS_CHECK(!agree(edit(SEED, "12:00:01Z", "12:00:01z")));
    EMS_CHECK(!agree(edit(SEED, "12:00:01Z", "12:00:60Z")));
    /* Another message kind, or a member that changes it. */
    EMS_CHECK(!agree(edit(SEED, "{\"device_id\"", "{\"type\":\"telemetry\",\"device_id\"")));
    EMS_CHECK(!agree(edit(SEED, "\"grid\":", "\"type\":\"device_info\",\"grid\":")));
    EMS_CHECK(!agree("{\"type\":\"telemetry_batch\",\"packets\":[]}"));
}

static void test_numbers(void)
{
    /* Exponents, -0, integers written as reals: taken and bit-identical. */
    static const char *const volts[] = {
        "5.32e1", "532E-1", "0.532e+2", "53.20000", "53.2e0", "0", "-0", "-0.0", "0e5",
        "0.1", "999.9999999999999", "123.456789012345678", "9007199254740993e-13",
        "0.30000000000000004", "1000", "1e3", "1000.0000000000001", "4.35", "2.5e-5",
        "0.000000000000000000000000000001", "9999999999999999999999e-19",
        "12345678901234567890e-17", "1e-22", "1e-23", "1e22e", "01", "1.", ".5", "+1",
        "1e", "1e+", "- 1", "--1", "0x10", "NaN", "Infinity", "1e400", "-1e400", "1e-400",
        "4.9e-324", "2.2250738585072011e-308", "1e-320",
    };
    int fast = 0;
    for (size_t i = 0; i < sizeof volts / sizeof volts[0]; i++) {
        char to[80];
        snprintf(to, sizeof to, "\"voltage\":%s,\"current\"", volts[i]);
        fast += agree(edit(SEED, "\"voltage\":53.2,\"current\"", to));
    }
    EMS_CHECK(fast >= 20);
    int fast_volts = fast;
    ems_telemetry_t t;
    const char *neg0 = edit(SEED, "\"power\":-200", "\"power\":-0");
    EMS_CHECK_INT(ems_telemetry_scan(neg0, strlen(neg0), &t), ==, 0);
    EMS_CHECK(t.grid_power == 0 && signbit(t.grid_power));
    EMS_CHECK(agree(neg0));
    /* Integers: seq, backlog, wifi_strength. */
    static const char *const seqs[] = {
        "0", "-0", "1042", "1042.0", "1.042e3", "9007199254740991", "9007199254740991.0",
        "9007199254740992", "9007199254740993", "18446744073709551616",
        "123456789012345678901234567890", "1e300", "1e400", "-1", "1.5", "1e-400", "0.0e0",
    };
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        char to[80];
        snprintf(to, sizeof to, ",\"seq\":%s,\"backlog\":%s}", seqs[i], seqs[i]);
        char text[1024];
        snprintf(text, sizeof text, "%.*s%s", (int)strlen(SEED) - 1, SEED, to);
        fast += agree(text);
    }
    EMS_CHECK_INT(fast - fast_volts, ==, 8); /* the 0..2^53-1 integers above (not 1e-400) */
    EMS_CHECK(agree(edit(SEED, "-45", "-45.0")));
    EMS_CHECK(agree(edit(SEED, "-45", "-4.5e1")));
    EMS_CHECK(agree(edit(SEED, "-45", "-0")));
    EMS_CHECK(agree(edit(SEED, "-45", "null")));
    EMS_CHECK(!agree(edit(SEED, "-45", "-45.5")));
    EMS_CHECK(!agree(edit(SEED, "-45", "-128")));
    EMS_CHECK(!agree(edit(SEED, "-45", "1")));
    EMS_CHECK(!agree(edit(SEED, "-45", "nul")));
    EMS_CHECK(!agree(edit(SEED, "-45", "nullx")));
    EMS_CHECK(!agree(edit(SEED, "-45", "\"-45\"")));
}

/* Random number texts in grid.power (range +-1e7) and an energy counter
 * (0..1e12), against jansson: short and long significands, exponents,
 * leading zeros, values at and beyond the limits. */
static void test_random_numbers(void)
{
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    int fast = 0;
    for (int i = 0; i < 20000; i++) {
        char num[64];
        size_t n = 0;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int digits = 1 + (int)(x % 22), point = (int)((x >> 8) % (uint64_t)(digits + 2));
        if ((x >> 16) & 1)
            num[n++] = '-';
        for (int k = 0; k < digits; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            num[n++] = (char)('0' + x % 10);
            if (k == point - 1 && k < digits - 1)
                num[n++] = '.';
        }
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (x % 3 == 0)
            n += (size_t)snprintf(num + n, sizeof num - n, "e%d", (int)(x >> 8) % 40 - 20);
        num[n] = '\0';
        char to[320];
        snprintf(to, sizeof to, "\"power\":%s,\"frequency\"", num);
        fast += agree(edit(SEED, "\"power\":-200,\"frequency\"", to));
        snprintf(to, sizeof to,
                 ",\"energy\":{\"battery_charged_wh\":%s,\"battery_discharged_wh\":0,"
                 "\"grid_import_wh\":0,\"grid_export_wh\":0,\"since\":\"2026-01-01T00:00:00Z\"}}",
                 num);
        char text[1024];
        snprintf(text, sizeof text, "%.*s%s", (int)strlen(SEED) - 1, SEED, to);
        fast += agree(text);
    }
    printf("# random numbers: %d of 40000 texts taken by the fast path\n", fast);
    EMS_CHECK(fast > 4000);
}

/* SEED with whitespace (all four kinds) around every token. */
static void test_whitespace(void)
{
    static const char ws[] = " \t\r\n";
    char text[4096];
    size_t n = 0;
    bool in_str = false;
    text[n++] = '\n';
    for (const char *p = SEED; *p; p++) {
        bool structural = !in_str && strchr("{}[]:,", *p);
        if (structural)
            text[n++] = ws[(p - SEED) % 4];
        text[n++] = *p;
        if (structural)
            text[n++] = ws[(p - SEED + 1) % 4];
        if (*p == '"')
            in_str = !in_str;
    }
    text[n++] = '\r';
    text[n] = '\0';
    EMS_CHECK(agree(text));
    /* Not whitespace for JSON: form feed, vertical tab, NBSP. */
    EMS_CHECK(!agree(edit(SEED, "{\"device_id\"", "{\f\"device_id\"")));
    EMS_CHECK(!agree(edit(SEED, "{\"device_id\"", "{\v\"device_id\"")));
    EMS_CHECK(!agree(edit(SEED, "{\"device_id\"", "{\xc2\xa0\"device_id\"")));
}

/* No proper prefix of a packet is a packet. */
static void test_truncated(void)
{
    const char *texts[] = {SEED, TYPICAL};
    for (int k = 0; k < 2; k++) {
        size_t len = strlen(texts[k]);
        for (size_t i = 0; i < len; i++) {
            char *copy = malloc(i ? i : 1); /* exact size: ASan sees any overread */
            memcpy(copy, texts[k], i);
            if (agree_n(copy, i))
                EMS_FAIL("a prefix of %zu bytes was accepted", i);
            free(copy);
        }
        EMS_CHECK(agree_n(texts[k], len));
    }
    EMS_CHECK_INT(ems_telemetry_scan(NULL, 0, &(ems_telemetry_t){0}), ==, EMS_EAGAIN);
}

static void test_trailing(void)
{
    char text[2048];
    static const char *const tails[] = {"x", "}", "{}", ",", "0", "null", "\"\"", "/", "\x01"};
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        snprintf(text, sizeof text, "%s %s", SEED, tails[i]);
        EMS_CHECK(!agree(text));
    }
    /* A NUL byte inside the length: after the object, and inside it. */
    size_t len = strlen(SEED);
    memcpy(text, SEED, len + 1);
    EMS_CHECK(!agree_n(text, len + 1));
    text[10] = '\0';
    EMS_CHECK(!agree_n(text, len));
    /* Structure: trailing commas, missing colon, arrays. */
    EMS_CHECK(!agree(edit(SEED, "}}", "},}")));
    EMS_CHECK(!agree(edit(SEED, "[]", "[,]")));
    EMS_CHECK(!agree(edit(SEED, "[]", "[\"OVERHEAT\",]")));
    EMS_CHECK(!agree(edit(SEED, "\"soc\":85", "\"soc\" 85")));
    EMS_CHECK(!agree(edit(SEED, "\"soc\":85", "\"soc\"::85")));
    EMS_CHECK(!agree("[]"));
    EMS_CHECK(!agree("{}"));
    EMS_CHECK(!agree(""));
    EMS_CHECK(!agree("\xef\xbb\xbf{}"));
}

static void test_members(void)
{
    /* Optional members present and absent, types refused. */
    EMS_CHECK(agree(edit(SEED, "-45}", "-45,\"target_mode\":\"MANUAL_IDLE\",\"target_power\":0}")));
    EMS_CHECK(!agree(edit(SEED, "-45}", "-45,\"target_mode\":null}")));
    EMS_CHECK(!agree(edit(SEED, "-45}", "-45,\"target_power\":-1}")));
    EMS_CHECK(!agree(edit(SEED, "-45}", "-45,\"target_power\":1000001}")));
    EMS_CHECK(agree(edit(SEED, "\"soc\":85", "\"soc\":85,\"temperature\":-50")));
    EMS_CHECK(!agree(edit(SEED, "\"soc\":85", "\"soc\":85,\"temperature\":150.1")));
    EMS_CHECK(!agree(edit(SEED, "\"soc\":85", "\"soc\":100.00000000000001")));
    EMS_CHECK(!agree(edit(SEED, ",\"wifi_strength\":-45", "")));
    EMS_CHECK(!agree(edit(SEED, "\"error_flags\":[],", "")));
    EMS_CHECK(!agree(edit(SEED, "\"error_flags\":[]", "\"error_flags\":null")));
    EMS_CHECK(!agree(edit(SEED, "\"error_flags\":[]", "\"error_flags\":[\"overheat\"]")));
    EMS_CHECK(!agree(edit(SEED, ",\"frequency\":50.0", "")));
    EMS_CHECK(!agree(edit(SEED, "\"grid\":{", "\"grid\":{\"extra\":1,")));
    EMS_CHECK(!agree(edit(SEED, "\"voltage\":53.2", "\"voltage\":\"53.2\"")));
    EMS_CHECK(!agree(edit(SEED, "\"voltage\":53.2", "\"voltage\":true")));
    EMS_CHECK(!agree(edit(SEED, "\"voltage\":53.2", "\"voltage\":[53.2]")));
    char text[2048];
    static const char *const tails[] = {
        ",\"clock_synced\":true,\"backfill\":true}", ",\"clock_synced\":false}",
        ",\"clock_synced\":1}", ",\"backfill\":null}", ",\"backfill\":True}",
        ",\"energy\":null}", ",\"energy\":{}}",
        ",\"energy\":{\"battery_charged_wh\":1,\"battery_discharged_wh\":2,"
        "\"grid_import_wh\":3,\"grid_export_wh\":4}}",
        ",\"energy\":{\"battery_charged_wh\":1,\"battery_discharged_wh\":2,"
        "\"grid_import_wh\":3,\"grid_export_wh\":1e12,\"since\":\"2020-02-29T00:00:00Z\"}}",
        ",\"energy\":{\"battery_charged_wh\":1,\"battery_discharged_wh\":2,"
        "\"grid_import_wh\":3,\"grid_export_wh\":1.0000000000000001e12,"
        "\"since\":\"2020-02-29T00:00:00Z\"}}",
        ",\"energy\":{\"battery_charged_wh\":1,\"battery_discharged_wh\":2,"
        "\"grid_import_wh\":3,\"grid_export_wh\":4,\"since\":\"2021-02-29T00:00:00Z\"}}",
    };
    int fast = 0;
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        snprintf(text, sizeof text, "%.*s%s", (int)strlen(SEED) - 1, SEED, tails[i]);
        fast += agree(text);
    }
    EMS_CHECK_INT(fast, ==, 3);
    /* Members in another order than the encoder's. */
    EMS_CHECK(agree("{\"grid\":{\"frequency\":50,\"power\":0,\"voltage\":230},"
                    "\"battery\":{\"soc\":1,\"power\":0,\"current\":0,\"voltage\":50},"
                    "\"system_status\":{\"wifi_strength\":null,\"error_flags\":[\"GRID_FAULT\","
                    "\"OVERHEAT\"],\"mode\":\"MANUAL\",\"state\":\"ERROR\"},"
                    "\"timestamp\":\"2026-01-31T12:00:01.5Z\",\"device_id\":\"a\"}"));
}

int main(void)
{
    EMS_RUN(test_common_packets_are_fast);
    EMS_RUN(test_vectors);
    EMS_RUN(test_duplicates);
    EMS_RUN(test_escapes_and_strings);
    EMS_RUN(test_numbers);
    EMS_RUN(test_random_numbers);
    EMS_RUN(test_whitespace);
    EMS_RUN(test_truncated);
    EMS_RUN(test_trailing);
    EMS_RUN(test_members);
    EMS_TEST_END();
}
