/* test_edge_state.c: the edge's persisted state file (edge/state.h): round
 * trip, first start, and every way a damaged file is refused (fail-safe:
 * latched, no flags). */
#include "ems_test.h"

#include "crc32c.h"
#include "error.h"
#include "state.h"
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static const char *tmp_path(const char *name)
{
    static char p[128];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/ems-state-XXXXXX");
        EMS_CHECK(mkdtemp(dir) != NULL);
    }
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    EMS_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void test_round_trip(void)
{
    const char *p = tmp_path("rt.state");
    ems_edge_state_t a = {.error_latched = true,
                          .error_flags = EMS_FAULT_OVERHEAT | EMS_FAULT_SENSOR_FAULT,
                          .error_since_ms = 1765123456789,
                          .has_soc = true,
                          .soc = 53.21,
                          .soc_saved_ms = 1765123450000};
    char err[256];
    EMS_CHECK_INT(ems_edge_state_save(p, &a, true, err, sizeof err), ==, 0);
    ems_edge_state_t b;
    EMS_CHECK_INT(ems_edge_state_load(p, &b, err, sizeof err), ==, 0);
    EMS_CHECK(b.error_latched);
    EMS_CHECK_INT(b.error_flags, ==, EMS_FAULT_OVERHEAT | EMS_FAULT_SENSOR_FAULT);
    EMS_CHECK_INT(b.error_since_ms, ==, 1765123456789);
    EMS_CHECK(b.has_soc);
    EMS_CHECK_NEAR(b.soc, 53.21, 1e-9);
    EMS_CHECK_INT(b.soc_saved_ms, ==, 1765123450000);
    /* No temporary file is left behind. */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    EMS_CHECK(access(tmp, F_OK) != 0);

    ems_edge_state_t c = {0};
    EMS_CHECK_INT(ems_edge_state_save(p, &c, false, err, sizeof err), ==, 0);
    EMS_CHECK_INT(ems_edge_state_load(p, &b, err, sizeof err), ==, 0);
    EMS_CHECK(!b.error_latched && b.error_flags == 0 && !b.has_soc);
}

static void test_missing_is_first_start(void)
{
    ems_edge_state_t s;
    char err[256];
    EMS_CHECK_INT(ems_edge_state_load(tmp_path("none.state"), &s, err, sizeof err), ==, EMS_ENOENT);
    EMS_CHECK(!s.error_latched);
}

static void check_damaged(const char *text, const char *needle)
{
    const char *p = tmp_path("bad.state");
    write_file(p, text);
    ems_edge_state_t s;
    char err[256];
    EMS_CHECK_INT(ems_edge_state_load(p, &s, err, sizeof err), ==, EMS_EINVAL);
    EMS_CHECK(s.error_latched);
    EMS_CHECK_INT(s.error_flags, ==, 0);
    if (!strstr(err, needle))
        EMS_FAIL("'%s' does not say '%s'", err, needle);
}

static void test_damaged_files_are_not_trusted(void)
{
    const char *p = tmp_path("good.state");
    ems_edge_state_t a = {.has_soc = true, .soc = 40, .soc_saved_ms = 1};
    char err[256];
    EMS_CHECK_INT(ems_edge_state_save(p, &a, false, err, sizeof err), ==, 0);
    FILE *f = fopen(p, "r");
    char good[1024];
    size_t n = fread(good, 1, sizeof good - 1, f);
    fclose(f);
    good[n] = '\0';

    check_damaged("", "no checksum line");
    /* A flipped digit: the checksum no longer matches. */
    char flipped[1024];
    snprintf(flipped, sizeof flipped, "%s", good);
    *strstr(flipped, "error_latched = 0") = 'E';
    check_damaged(flipped, "checksum mismatch");
    /* Torn after the checksum line or with content appended. */
    char appended[1100];
    snprintf(appended, sizeof appended, "%sgarbage\n", good);
    check_damaged(appended, "no checksum line");
    /* Truncated: the checksum line is gone. */
    char cut[1024];
    snprintf(cut, sizeof cut, "%s", good);
    *strstr(cut, "crc32c") = '\0';
    check_damaged(cut, "no checksum line");
}

/* The energy ceilings (edge/energy.h): exact integers, all five lines or
 * none; a file from before energy counting loads without them. */
static void test_energy_lines(void)
{
    const char *p = tmp_path("energy.state");
    ems_edge_state_t a = {.has_energy = true,
                          .energy_since_ms = 1767225600000,
                          .energy_mwh = {1234567, 0, 999999999999999999ULL, 42}};
    char err[256];
    EMS_CHECK_INT(ems_edge_state_save(p, &a, false, err, sizeof err), ==, 0);
    ems_edge_state_t b;
    EMS_CHECK_INT(ems_edge_state_load(p, &b, err, sizeof err), ==, 0);
    EMS_CHECK(b.has_energy);
    EMS_CHECK_INT(b.energy_since_ms, ==, 1767225600000);
    EMS_CHECK(b.energy_mwh[0] == 1234567 && b.energy_mwh[1] == 0 &&
              b.energy_mwh[2] == 999999999999999999ULL && b.energy_mwh[3] == 42);
    EMS_CHECK(!b.error_latched);

    /* Written before energy counting: loads, no energy. */
    ems_edge_state_t old = {.error_latched = false};
    EMS_CHECK_INT(ems_edge_state_save(p, &old, false, err, sizeof err), ==, 0);
    EMS_CHECK_INT(ems_edge_state_load(p, &b, err, sizeof err), ==, 0);
    EMS_CHECK(!b.has_energy);

    /* Checksummed but wrong: a missing line, a sign, a fraction, too long. */
    static const char *const bodies[][2] = {
        {"energy_since_ms = 1\nenergy_battery_charged_mwh = 1\n", "energy lines are missing"},
        {"energy_since_ms = 1\nenergy_battery_charged_mwh = -1\n", "bad value"},
        {"energy_grid_export_mwh = 1.5\n", "bad value"},
        {"energy_grid_import_mwh = 1234567890123456789\n", "bad value"},
        {"energy_grid_import_mwh = \n", "bad value"},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char text[512];
        int n = snprintf(text, sizeof text, "error_latched = 0\n%s", bodies[i][0]);
        snprintf(text + n, sizeof text - (size_t)n, "crc32c = %08x\n",
                 (unsigned)ems_crc32c(0, text, (size_t)n));
        check_damaged(text, bodies[i][1]);
        ems_edge_state_t s;
        EMS_CHECK_INT(ems_edge_state_load(tmp_path("bad.state"), &s, err, sizeof err), ==,
                      EMS_EINVAL);
        EMS_CHECK(!s.has_energy); /* a damaged file gives no counters to trust */
    }
}

int main(void)
{
    EMS_RUN(test_round_trip);
    EMS_RUN(test_missing_is_first_start);
    EMS_RUN(test_damaged_files_are_not_trusted);
    EMS_RUN(test_energy_lines);
    EMS_TEST_END();
}
