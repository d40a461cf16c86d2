/* Unit tests: the telemetry columns the DB writer fills
 * (cloud/dbwriter/telemetry_columns.h) against the table the migrations
 * create (cloud/db/0002_telemetry.*.sql plus the columns later migrations
 * add), and the statement and row encoding derived from them (ingest.c).
 *
 * The migrations are history and never change; this test is what keeps
 * the C table and the schema in step when a migration adds a column. */
#include "ems_test.h"

#include "ingest.h"
#include "log.h"

#include <ctype.h>
#include <stdbool.h>

#define MAXCOLS 64

typedef struct {
    char name[64];
    char type[64];
} col_t;

typedef struct {
    col_t c[MAXCOLS];
    int n;
} cols_t;

/* The schema's spelling of a type -> PostgreSQL's internal name, which the
 * column table uses. */
static const char *canon(const char *t)
{
    static const char *const map[][2] = {
        {"real", "float4"},   {"bigint", "int8"},  {"integer", "int4"},
        {"smallint", "int2"}, {"boolean", "bool"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(t, map[i][0]))
            return map[i][1];
    return t;
}

static void add_col(cols_t *cs, const char *line)
{
    col_t c;
    char type[64];
    if (sscanf(line, " %63[a-z0-9_] %63[a-z0-9_]", c.name, type) != 2)
        EMS_FAIL("cannot read a column from \"%s\"", line);
    snprintf(c.type, sizeof c.type, "%s", canon(type));
    EMS_CHECK(cs->n < MAXCOLS);
    cs->c[cs->n++] = c;
}

static FILE *open_migration(const char *name)
{
    const char *root = getenv("EMS_ROOT");
    char path[512];
    snprintf(path, sizeof path, "%s/cloud/db/%s", root ? root : ".", name);
    FILE *f = fopen(path, "r");
    if (!f)
        EMS_FAIL("cannot open %s", path);
    return f;
}

/* The columns of "CREATE TABLE telemetry (...)" in `create`, then those of
 * "ALTER TABLE telemetry ADD COLUMN ..." in `alter`. */
static void schema_columns(const char *create, const char *alter, cols_t *cs)
{
    char line[512];
    FILE *f = open_migration(create);
    bool in = false;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "CREATE TABLE telemetry (", 24)) {
            in = true;
            continue;
        }
        if (in && line[0] == ')')
            break;
        if (in && strstr(line, "--") != line + strspn(line, " "))
            add_col(cs, line);
    }
    fclose(f);
    EMS_CHECK(in);
    f = open_migration(alter);
    in = false;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "ALTER TABLE ", 12))
            in = !strncmp(line, "ALTER TABLE telemetry\n", 22);
        const char *add = strstr(line, "ADD COLUMN ");
        if (in && add)
            add_col(cs, add + 11);
    }
    fclose(f);
}

static void check_schema(const char *create, const char *alter)
{
    cols_t cs = {0};
    schema_columns(create, alter, &cs);
    const ems_ingest_col_t *c = ems_ingest_cols();
    EMS_CHECK_INT(cs.n, ==, EMS_INGEST_NCOLS);
    for (int i = 0; i < EMS_INGEST_NCOLS; i++) {
        int k = 0;
        while (k < cs.n && strcmp(cs.c[k].name, c[i].name))
            k++;
        if (k == cs.n)
            EMS_FAIL("column %s is not in %s/%s", c[i].name, create, alter);
        EMS_CHECK_STR(c[i].sql_type, cs.c[k].type);
        for (int j = 0; j < i; j++)
            EMS_CHECK(strcmp(c[j].name, c[i].name) != 0);
    }
}

static void test_columns_match_pg_schema(void)
{
    check_schema("0002_telemetry.pg.sql", "0005_energy.pg.sql");
}

static void test_columns_match_tsdb_schema(void)
{
    check_schema("0002_telemetry.tsdb.sql", "0005_energy.tsdb.sql");
}

/* The statement names every column once and binds every parameter. */
static void test_insert_sql(void)
{
    for (int rollup = 0; rollup < 2; rollup++) {
        const char *sql = ems_ingest_insert_sql(rollup);
        EMS_CHECK(strlen(sql) < 4000);
        EMS_CHECK(strstr(sql, "INSERT INTO telemetry (device_id, ts, seq, received_at, state,"));
        EMS_CHECK(
            strstr(sql, "r.state::ems_state, r.mode::ems_mode, r.target_mode::ems_target_mode"));
        EMS_CHECK(strstr(sql, "$25::int8[]) AS r(device_id,"));
        EMS_CHECK(!strstr(sql, "$26"));
        EMS_CHECK(strstr(sql, "ON CONFLICT DO NOTHING"));
        EMS_CHECK(strstr(sql, "SELECT count(*) AS inserted FROM ins"));
        EMS_CHECK(!strstr(sql, "ems_rollup_queue") == !rollup);
    }
}

/* One row: one element per column; absent optional values and energy
 * counters are NULL. */
static void test_row_encoding(void)
{
    ems_pg_array_t cols[EMS_INGEST_NCOLS];
    for (int i = 0; i < EMS_INGEST_NCOLS; i++)
        ems_pg_array_init(&cols[i], ems_ingest_cols()[i].elem_oid);
    ems_telemetry_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.device_id, sizeof t.device_id, "dev_1");
    t.timestamp_ms = 1700000000000;
    ems_ingest_cols_reset(cols);
    ems_ingest_cols_add(cols, &t, t.timestamp_ms + 5);
    const char *vals[EMS_INGEST_NCOLS];
    int lens[EMS_INGEST_NCOLS], fmts[EMS_INGEST_NCOLS];
    EMS_CHECK_INT(ems_ingest_cols_params(cols, vals, lens, fmts), ==, 0);
    for (int i = 0; i < EMS_INGEST_NCOLS; i++) {
        const char *name = ems_ingest_cols()[i].name;
        bool optional = !strcmp(name, "target_mode") || !strcmp(name, "target_power") ||
                        !strcmp(name, "wifi_strength") || !strcmp(name, "battery_temperature") ||
                        !strcmp(name, "clock_synced") || !strncmp(name, "energy_", 7);
        EMS_CHECK_INT(cols[i].count, ==, 1);
        EMS_CHECK(cols[i].has_null == optional);
        EMS_CHECK_INT(fmts[i], ==, 1);
        EMS_CHECK(ems_ingest_col_types()[i] == ems_ingest_cols()[i].array_oid);
    }
    t.has_energy = true;
    t.energy_since_ms = t.timestamp_ms - 1000;
    t.energy_battery_charged_wh = 1.5;
    EMS_CHECK(ems_ingest_energy_ok(&t));
    t.energy_grid_export_wh = -1;
    EMS_CHECK(!ems_ingest_energy_ok(&t));
    for (int i = 0; i < EMS_INGEST_NCOLS; i++)
        ems_pg_array_free(&cols[i]);
}

int main(void)
{
    ems_log_init("test_dbw_columns", EMS_LOG_ERROR);
    EMS_RUN(test_columns_match_pg_schema);
    EMS_RUN(test_columns_match_tsdb_schema);
    EMS_RUN(test_insert_sql);
    EMS_RUN(test_row_encoding);
    EMS_TEST_END();
}
