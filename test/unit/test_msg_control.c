/* test_msg_control.c: ack, nack, welcome, batch, dashboard messages,
 * device_info, the classifier and the JSON writer. */
#include "ems_test.h"

#include "ack.h"
#include "batch.h"
#include "dashboard.h"
#include "device_info.h"
#include "error.h"
#include "jsonw.h"
#include "message.h"
#include "nack.h"
#include "welcome.h"

static void test_ack_add(void)
{
    ems_ack_t a;
    ems_ack_init(&a);
    uint64_t seqs[] = {5, 7, 6, 1, 2, 10, 6, 3, 9};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++)
        EMS_CHECK_INT(ems_ack_add(&a, seqs[i]), ==, 0);
    /* 1-3, 5-7 (6 filled the gap), 9-10 */
    EMS_CHECK_INT(a.count, ==, 3);
    EMS_CHECK(a.ranges[0].first == 1 && a.ranges[0].last == 3);
    EMS_CHECK(a.ranges[1].first == 5 && a.ranges[1].last == 7);
    EMS_CHECK(a.ranges[2].first == 9 && a.ranges[2].last == 10);
    EMS_CHECK(ems_ack_contains(&a, 6) && !ems_ack_contains(&a, 4) && !ems_ack_contains(&a, 11));
    EMS_CHECK_INT(ems_ack_add(&a, 4), ==, 0); /* joins 1-3 and 5-7 */
    EMS_CHECK_INT(a.count, ==, 2);
    EMS_CHECK_INT(ems_ack_add(&a, EMS_SEQ_MAX + 1), ==, EMS_EINVAL);
    ems_ack_init(&a);
    for (uint64_t s = 0; s < 2 * EMS_ACK_RANGES_MAX; s += 2)
        EMS_CHECK_INT(ems_ack_add(&a, s), ==, 0);
    EMS_CHECK_INT(ems_ack_add(&a, 1000), ==, EMS_ENOSPC); /* would need a 257th range */
    EMS_CHECK_INT(ems_ack_add(&a, 1), ==, 0);             /* merging still works */
    EMS_CHECK_INT(a.count, ==, EMS_ACK_RANGES_MAX - 1);
}

static void test_ack_codec(void)
{
    ems_ack_t a, back;
    ems_verr_t err;
    const char *ex = "{\"type\":\"ack\",\"ranges\":[[1040,1042],[1100,1100]]}";
    EMS_CHECK_INT(ems_ack_decode(ex, strlen(ex), &a, &err), ==, 0);
    EMS_CHECK_INT(a.count, ==, 2);
    char buf[EMS_ACK_JSON_MAX];
    EMS_CHECK_INT(ems_ack_encode(&a, buf, sizeof buf), ==, (int)strlen(ex));
    EMS_CHECK_STR(buf, ex);
    const char *bad = "{\"type\":\"ack\",\"ranges\":[[1,5],[5,9]]}";
    EMS_CHECK_INT(ems_ack_decode(bad, strlen(bad), &back, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "ranges[1]");
    ems_ack_init(&a);
    EMS_CHECK_INT(ems_ack_encode(&a, buf, sizeof buf), ==, EMS_EINVAL); /* empty */
    for (uint64_t s = 0; s < 2 * EMS_ACK_RANGES_MAX; s += 2)
        ems_ack_add(&a, EMS_SEQ_MAX - s);
    int n = ems_ack_encode(&a, buf, sizeof buf); /* the largest ack fits the bound */
    EMS_CHECK_INT(n, >, 0);
    EMS_CHECK_INT(ems_ack_decode(buf, (size_t)n, &back, &err), ==, 0);
    EMS_CHECK_INT(back.count, ==, EMS_ACK_RANGES_MAX);
    EMS_CHECK(memcmp(back.ranges, a.ranges, sizeof a.ranges) == 0);
}

static void test_nack(void)
{
    ems_verr_t e;
    ems_verr_set(&e, "battery.soc", "101 is above the maximum 100");
    ems_nack_t n, back;
    ems_nack_from_verr(&n, 1043, &e);
    char buf[EMS_NACK_JSON_MAX];
    int len = ems_nack_encode(&n, buf, sizeof buf);
    EMS_CHECK_STR(buf, "{\"type\":\"nack\",\"seq\":1043,\"path\":\"battery.soc\","
                       "\"reason\":\"101 is above the maximum 100\"}");
    ems_verr_t err;
    EMS_CHECK_INT(ems_nack_decode(buf, (size_t)len, &back, &err), ==, 0);
    EMS_CHECK(back.has_seq && back.seq == 1043);
    EMS_CHECK_STR(back.reason, n.reason);
    ems_nack_from_verr(&n, -1, &e);
    EMS_CHECK(!n.has_seq);
    EMS_CHECK_INT(ems_nack_encode(&n, buf, sizeof buf), >, 0);
    EMS_CHECK(strstr(buf, "seq") == NULL);
    const char *empty = "{\"type\":\"nack\",\"path\":\"\",\"reason\":\"\"}";
    EMS_CHECK_INT(ems_nack_decode(empty, strlen(empty), &back, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "reason");
}

/* A reason cut by the verr buffer never ends in half a UTF-8 character,
 * so a nack made from it is still valid JSON text. */
static void test_verr_utf8_cut(void)
{
    char longtext[600];
    size_t n = 0;
    while (n + 2 < sizeof longtext - 1) {
        memcpy(longtext + n, "\xc3\xa9", 2); /* é */
        n += 2;
    }
    longtext[n] = '\0';
    ems_verr_t e;
    ems_verr_set(&e, "x", "a%s", longtext); /* odd offset: the cut falls inside a character */
    EMS_CHECK_INT(strlen(e.reason) % 2, ==, 1);
    ems_nack_t nack;
    ems_nack_from_verr(&nack, 1, &e);
    char buf[EMS_NACK_JSON_MAX];
    EMS_CHECK_INT(ems_nack_encode(&nack, buf, sizeof buf), >, 0);
    ems_verr_set(&e, "battery.soc", "r");
    ems_verr_prefix(&e, "packets[3]");
    EMS_CHECK_STR(e.path, "packets[3].battery.soc");
    ems_verr_set(&e, "", "r");
    ems_verr_prefix(&e, "packets[3]");
    EMS_CHECK_STR(e.path, "packets[3]");
}

static void test_welcome(void)
{
    ems_welcome_t w = {.server_time_ms = 1769860800512LL}, back;
    strcpy(w.device_id, "ems_001");
    char buf[EMS_WELCOME_JSON_MAX];
    int n = ems_welcome_encode(&w, buf, sizeof buf);
    EMS_CHECK_STR(buf, "{\"type\":\"welcome\",\"device_id\":\"ems_001\","
                       "\"server_time\":\"2026-01-31T12:00:00.512Z\"}");
    ems_verr_t err;
    EMS_CHECK_INT(ems_welcome_decode(buf, (size_t)n, &back, &err), ==, 0);
    EMS_CHECK_STR(back.device_id, "ems_001");
    EMS_CHECK_INT(back.server_time_ms, ==, w.server_time_ms);
    strcpy(w.device_id, "no spaces");
    EMS_CHECK_INT(ems_welcome_encode(&w, buf, sizeof buf), ==, EMS_EINVAL);
}

static const char PKT[] = "{\"device_id\":\"ems_001\",\"timestamp\":\"2026-01-31T12:00:01Z\","
                          "\"system_status\":{\"state\":\"IDLE\",\"mode\":\"AUTO\",\"error_flags\":[],"
                          "\"wifi_strength\":null},\"battery\":{\"voltage\":50,\"current\":0,\"power\":0,"
                          "\"soc\":%s},\"grid\":{\"voltage\":230,\"power\":0,\"frequency\":50}%s}";

typedef struct {
    int good, bad;
    uint64_t bad_seq;
    char bad_path[128], bad_packet_path[128];
} batch_seen_t;

static void on_item(void *ctx, const ems_batch_item_t *item)
{
    batch_seen_t *s = ctx;
    if (item->packet) {
        s->good++;
        EMS_CHECK(item->has_seq && item->seq == item->packet->seq);
        return;
    }
    s->bad++;
    s->bad_seq = item->has_seq ? item->seq : 999999;
    snprintf(s->bad_path, sizeof s->bad_path, "%s", item->err->path);
    snprintf(s->bad_packet_path, sizeof s->bad_packet_path, "%s", item->packet_path);
}

static void test_batch(void)
{
    char text[8192], one[1024];
    int n = snprintf(text, sizeof text, "{\"type\":\"telemetry_batch\",\"packets\":[");
    for (int i = 0; i < 5; i++) {
        char seq[32];
        snprintf(seq, sizeof seq, ",\"seq\":%d", 100 + i);
        snprintf(one, sizeof one, PKT, i == 3 ? "101" : "50.5", seq);
        n += snprintf(text + n, sizeof text - (size_t)n, "%s%s", i ? "," : "", one);
    }
    snprintf(text + n, sizeof text - (size_t)n, "]}");
    batch_seen_t seen = {0};
    ems_verr_t err;
    EMS_CHECK_INT(ems_batch_decode(text, strlen(text), on_item, &seen, &err), ==, 1);
    EMS_CHECK_INT(seen.good, ==, 4);
    EMS_CHECK_INT(seen.bad, ==, 1);
    EMS_CHECK_INT(seen.bad_seq, ==, 103); /* the nack can name the refused packet */
    EMS_CHECK_STR(seen.bad_path, "packets[3].battery.soc");
    EMS_CHECK_STR(seen.bad_packet_path, "battery.soc");
    /* Without a callback the first refused packet's error is returned. */
    json_t *root = json_loads(text, 0, NULL);
    EMS_CHECK_INT(ems_batch_from_json(root, NULL, NULL, &err), ==, 1);
    EMS_CHECK_STR(err.path, "packets[3].battery.soc");
    EMS_CHECK_INT(ems_message_validate(EMS_MSG_TELEMETRY_BATCH, root, &err), ==, EMS_EINVAL);
    json_decref(root);
    const char *empty = "{\"type\":\"telemetry_batch\",\"packets\":[]}";
    EMS_CHECK_INT(ems_batch_decode(empty, strlen(empty), on_item, &seen, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "packets");
}

static void test_batch_encode(void)
{
    ems_telemetry_t p[3];
    char one[1024];
    ems_verr_t err;
    snprintf(one, sizeof one, PKT, "42.1", ",\"seq\":7");
    for (int i = 0; i < 3; i++) {
        EMS_CHECK_INT(ems_telemetry_decode(one, strlen(one), &p[i], &err), ==, 0);
        p[i].seq = 7 + (uint64_t)i;
    }
    char buf[EMS_BATCH_JSON_MAX];
    int n = ems_batch_encode(p, 3, buf, sizeof buf);
    EMS_CHECK_INT(n, >, 0);
    batch_seen_t seen = {0};
    EMS_CHECK_INT(ems_batch_decode(buf, (size_t)n, on_item, &seen, &err), ==, 0);
    EMS_CHECK_INT(seen.good, ==, 3);
    EMS_CHECK_INT(ems_batch_encode(p, 0, buf, sizeof buf), ==, EMS_EINVAL);
    EMS_CHECK_INT(ems_batch_encode(p, 3, buf, 300), ==, EMS_ENOSPC);
    p[1].has_seq = false; /* a backfill packet without seq could never be acked */
    EMS_CHECK_INT(ems_batch_encode(p, 3, buf, sizeof buf), ==, EMS_EINVAL);
}

static void test_dashboard(void)
{
    ems_verr_t err;
    ems_dash_sub_t s;
    json_t *j = json_loads("{\"type\":\"unsubscribe\",\"devices\":[\"a\",\"b\"]}", 0, NULL);
    EMS_CHECK_INT(ems_dash_sub_from_json(j, &s, &err), ==, 0);
    EMS_CHECK(s.unsubscribe && !s.all);
    EMS_CHECK_INT(ems_dash_sub_count(&s), ==, 2);
    EMS_CHECK_STR(ems_dash_sub_device(&s, 1), "b");
    json_decref(j);
    j = json_loads("{\"type\":\"subscribe\",\"devices\":\"*\"}", 0, NULL);
    EMS_CHECK_INT(ems_dash_sub_from_json(j, &s, &err), ==, 0);
    EMS_CHECK(s.all && !s.unsubscribe && ems_dash_sub_count(&s) == 0);
    json_decref(j);
    j = json_loads("{\"type\":\"subscribe\",\"devices\":[\"ok\",\"not ok\"]}", 0, NULL);
    EMS_CHECK_INT(ems_dash_sub_from_json(j, &s, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "devices[1]");
    json_decref(j);

    char buf[2048];
    const char *pkt = "{\"a\":1}";
    EMS_CHECK_INT(ems_dash_telemetry_encode(pkt, strlen(pkt), buf, sizeof buf), >, 0);
    EMS_CHECK_STR(buf, "{\"type\":\"telemetry\",\"packet\":{\"a\":1}}");
    ems_dash_device_t d = {.online = false, .since_ms = 0};
    strcpy(d.device_id, "ems_001");
    EMS_CHECK_INT(ems_dash_device_encode(&d, buf, sizeof buf), >, 0);
    EMS_CHECK_STR(buf, "{\"type\":\"device\",\"device_id\":\"ems_001\",\"online\":false,"
                       "\"since\":\"1970-01-01T00:00:00.000Z\"}");
    ems_verr_set(&err, "devices", "expected \"*\"");
    EMS_CHECK_INT(ems_dash_error_encode(&err, buf, sizeof buf), >, 0);
    EMS_CHECK_STR(buf, "{\"type\":\"error\",\"path\":\"devices\",\"reason\":\"expected \\\"*\\\"\"}");
    ems_msg_kind_t kind;
    EMS_CHECK_INT(ems_message_check_text(buf, strlen(buf), EMS_MSG_UNKNOWN, &kind, &err), ==, 0);
    EMS_CHECK_INT(kind, ==, EMS_MSG_DASH_ERROR);
}

static void test_device_info(void)
{
    const char *ex = "{\"type\":\"device_info\",\"firmware\":\"ems-edge 0.1.0\",\"capacity_wh\":10000,"
                     "\"limits\":{\"max_charge_w\":5000,\"max_discharge_w\":5000,\"soc_min\":10,\"soc_max\":95}}";
    ems_device_info_t d;
    ems_verr_t err;
    EMS_CHECK_INT(ems_device_info_decode(ex, strlen(ex), &d, &err), ==, 0);
    EMS_CHECK(d.has_firmware && d.has_capacity_wh && d.has_soc_min && d.has_soc_max);
    EMS_CHECK(d.max_discharge_w == 5000 && d.soc_max == 95);
    char buf[EMS_DEVICE_INFO_JSON_MAX];
    EMS_CHECK_INT(ems_device_info_encode(&d, buf, sizeof buf), ==, (int)strlen(ex));
    EMS_CHECK_STR(buf, ex);
    d.soc_min = 96;
    EMS_CHECK_INT(ems_device_info_check(&d, &err), ==, EMS_EINVAL);
    EMS_CHECK_STR(err.path, "limits.soc_max");
    memset(&d, 0, sizeof d);
    EMS_CHECK_INT(ems_device_info_encode(&d, buf, sizeof buf), >, 0);
    EMS_CHECK_STR(buf, "{\"type\":\"device_info\"}");
}

static ems_msg_kind_t classify(const char *text)
{
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    EMS_CHECK(j != NULL);
    ems_msg_kind_t k = ems_message_classify(j);
    json_decref(j);
    return k;
}

static void test_classify(void)
{
    EMS_CHECK_INT(classify("{\"device_id\":\"x\"}"), ==, EMS_MSG_TELEMETRY);
    EMS_CHECK_INT(classify("{\"action\":\"SET_MODE\"}"), ==, EMS_MSG_COMMAND);
    EMS_CHECK_INT(classify("{\"device_id\":\"x\",\"action\":1}"), ==, EMS_MSG_TELEMETRY);
    EMS_CHECK_INT(classify("{\"type\":\"ack\",\"device_id\":\"x\"}"), ==, EMS_MSG_ACK);
    EMS_CHECK_INT(classify("{\"type\":\"unsubscribe\"}"), ==, EMS_MSG_DASH_SUBSCRIBE);
    EMS_CHECK_INT(classify("{\"type\":\"telemetry\"}"), ==, EMS_MSG_DASH_TELEMETRY);
    EMS_CHECK_INT(classify("{\"type\":\"device_info\"}"), ==, EMS_MSG_DEVICE_INFO);
    EMS_CHECK_INT(classify("{\"type\":\"ack \"}"), ==, EMS_MSG_UNKNOWN);
    EMS_CHECK_INT(classify("{\"type\":\"ack\\u0000x\"}"), ==, EMS_MSG_UNKNOWN);
    EMS_CHECK_INT(classify("{\"type\":7,\"device_id\":\"x\"}"), ==, EMS_MSG_UNKNOWN);
    EMS_CHECK_INT(classify("{}"), ==, EMS_MSG_UNKNOWN);
    EMS_CHECK_INT(classify("[]"), ==, EMS_MSG_UNKNOWN);
    ems_verr_t err;
    json_t *j = json_loads("{\"type\":\"hello\"}", 0, NULL);
    EMS_CHECK_INT(ems_message_identify(j, &err), ==, EMS_MSG_UNKNOWN);
    EMS_CHECK_STR(err.path, "type");
    EMS_CHECK_STR(err.reason, "\"hello\" is not a known message type");
    json_decref(j);
    for (int k = 1; k < EMS_MSG_COUNT; k++) {
        ems_msg_kind_t back;
        EMS_CHECK_INT(ems_message_kind_parse(ems_message_kind_name((ems_msg_kind_t)k), &back), ==, 0);
        EMS_CHECK_INT(back, ==, k);
    }
    EMS_CHECK_STR(ems_message_kind_name(EMS_MSG_COUNT), "unknown");
    EMS_CHECK_INT(ems_message_classify(NULL), ==, EMS_MSG_UNKNOWN);
}

static void test_jsonw(void)
{
    char buf[128];
    ems_jw_t w;
    ems_jw_init(&w, buf, sizeof buf);
    ems_jw_obj_open(&w);
    ems_jw_key(&w, "a\"b");
    ems_jw_arr_open(&w);
    ems_jw_int(&w, -1);
    ems_jw_num(&w, 0.5);
    ems_jw_bool(&w, true);
    ems_jw_null(&w);
    ems_jw_str(&w, "\x01\n\\");
    ems_jw_arr_close(&w);
    ems_jw_key(&w, "u");
    ems_jw_uint(&w, UINT64_MAX);
    ems_jw_obj_close(&w);
    EMS_CHECK_INT(ems_jw_finish(&w), >, 0);
    EMS_CHECK_STR(buf, "{\"a\\\"b\":[-1,0.5,true,null,\"\\u0001\\u000a\\\\\"],\"u\":18446744073709551615}");
    ems_jw_init(&w, buf, 5);
    ems_jw_str(&w, "toolong");
    ems_jw_null(&w); /* sticky: nothing more is written */
    EMS_CHECK_INT(ems_jw_finish(&w), ==, EMS_ENOSPC);
    ems_jw_init(&w, buf, sizeof buf);
    ems_jw_num(&w, NAN);
    EMS_CHECK_INT(ems_jw_finish(&w), ==, EMS_EINVAL);
    /* the growable form (DB writer answers) escapes exactly like the writer;
     * an interior NUL counts as a control character */
    static const char odd[] = "q\"b\\\x1f\x00\xc3\xa9 end";
    ems_jw_init(&w, buf, sizeof buf);
    ems_jw_strn(&w, odd, sizeof odd - 1);
    EMS_CHECK_INT(ems_jw_finish(&w), >, 0);
    ems_buf_t gb = EMS_BUF_INIT(40);
    EMS_CHECK_INT(ems_jw_buf_str(&gb, odd, sizeof odd - 1), ==, 0);
    EMS_CHECK_INT(ems_buf_len(&gb), ==, strlen(buf));
    EMS_CHECK(memcmp(ems_buf_data(&gb), buf, strlen(buf)) == 0);
    EMS_CHECK_STR(buf, "\"q\\\"b\\\\\\u001f\\u0000\xc3\xa9 end\"");
    EMS_CHECK_INT(ems_jw_buf_str(&gb, "0123456789abcdef", 16), ==, EMS_ENOSPC); /* past its cap */
    ems_buf_free(&gb);
    /* a jansson tree: members in order, numbers in their shortest text */
    json_t *o = json_pack("{sfs[ifsb]sn}", "v", 52.9, "a", 7, 558.6, "x\n", 1, "z");
    ems_jw_init(&w, buf, sizeof buf);
    ems_jw_json(&w, o);
    json_decref(o);
    EMS_CHECK_INT(ems_jw_finish(&w), >, 0);
    EMS_CHECK_STR(buf, "{\"v\":52.9,\"a\":[7,558.6,\"x\\u000a\",true],\"z\":null}");
    char num[EMS_JW_NUM_MAX];
    ems_jw_fmt_double(0.1, num);
    EMS_CHECK_STR(num, "0.1");
    ems_jw_fmt_double(1.0 / 3.0, num);
    EMS_CHECK_STR(num, "0.3333333333333333"); /* 16 digits suffice */
    ems_jw_fmt_double(0.1 + 0.2, num);
    EMS_CHECK_STR(num, "0.30000000000000004"); /* 17 needed */
    ems_jw_fmt_double(5e-324, num);
    EMS_CHECK(strtod(num, NULL) == 5e-324);
}

int main(void)
{
    EMS_RUN(test_ack_add);
    EMS_RUN(test_ack_codec);
    EMS_RUN(test_nack);
    EMS_RUN(test_verr_utf8_cut);
    EMS_RUN(test_welcome);
    EMS_RUN(test_batch);
    EMS_RUN(test_batch_encode);
    EMS_RUN(test_dashboard);
    EMS_RUN(test_device_info);
    EMS_RUN(test_classify);
    EMS_RUN(test_jsonw);
    EMS_TEST_END();
}
