-- 0002_telemetry (plain PostgreSQL): the telemetry table, natively
-- partitioned by time, and an exact 1-minute rollup that the DB writer
-- keeps up to date behind a watermark (the plain-PostgreSQL stand-in for
-- a continuous aggregate). The TimescaleDB variant of this version is
-- 0002_telemetry.tsdb.sql; the two expose the same tables and columns to
-- queries (docs/storage.md).

-- One row per packet, typed columns (docs/protocol.md 2.1). Columns are
-- ordered widest first so that no alignment padding is wasted per row.
-- seq is -1 when the packet carried none. error_flags: see ems_fault_names.
CREATE TABLE telemetry (
    ts                  timestamptz NOT NULL,
    received_at         timestamptz NOT NULL,
    seq                 bigint NOT NULL,
    battery_voltage     real NOT NULL,
    battery_current     real NOT NULL,
    battery_power       real NOT NULL,
    battery_soc         real NOT NULL,
    battery_temperature real,
    grid_voltage        real NOT NULL,
    grid_power          real NOT NULL,
    grid_frequency      real NOT NULL,
    target_power        real,
    error_flags         integer NOT NULL,
    state               ems_state NOT NULL,
    mode                ems_mode NOT NULL,
    target_mode         ems_target_mode,
    wifi_strength       smallint,
    clock_synced        boolean,
    backfill            boolean NOT NULL DEFAULT false,
    device_id           text NOT NULL
) PARTITION BY RANGE (ts);

-- The idempotency key (ON CONFLICT DO NOTHING) and the index every device
-- query uses. It must contain the partition key, ts.
CREATE UNIQUE INDEX telemetry_key ON telemetry (device_id, ts, seq);
-- Time ranges across all devices (the rollup step): rows arrive nearly in
-- time order, so a BRIN index is tiny and almost free to maintain.
CREATE INDEX telemetry_ts_brin ON telemetry USING brin (ts);

-- Rows whose day has no partition (a device clock years off, or a backfill
-- older than the partitions made ahead) land here instead of failing.
-- ems_ensure_partitions moves them out when their day gets a partition.
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;

-- Makes the daily partitions covering [p_from, p_to) that do not exist
-- yet; returns how many it made. Called by the DB writer at start and every
-- hour (ahead of time, so inserts never wait for DDL).
CREATE FUNCTION ems_ensure_partitions(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date := (p_from AT TIME ZONE 'UTC')::date;
    lo timestamptz;
    hi timestamptz;
    part text;
    made integer := 0;
BEGIN
    WHILE (d::timestamp AT TIME ZONE 'UTC') < p_to LOOP
        part := 'telemetry_p' || to_char(d, 'YYYYMMDD');
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF to_regclass(part) IS NULL THEN
            IF EXISTS (SELECT 1 FROM telemetry_default WHERE ts >= lo AND ts < hi) THEN
                -- Attaching over rows in the default partition would fail:
                -- move them into the new table first.
                EXECUTE format('CREATE TABLE %I (LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                EXECUTE format('WITH m AS (DELETE FROM telemetry_default WHERE ts >= $1 AND ts < $2 RETURNING *) '
                               'INSERT INTO %I SELECT * FROM m', part) USING lo, hi;
                EXECUTE format('ALTER TABLE telemetry ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               part, lo, hi);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                               part, lo, hi);
            END IF;
            made := made + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN made;
END
$$;

-- Retention: drops the daily partitions that end at or before p_raw_before
-- (and such rows in the default partition), and rollup rows older than
-- p_rollup_before. Returns the number of partitions dropped.
CREATE FUNCTION ems_apply_retention(p_raw_before timestamptz, p_rollup_before timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'telemetry'::regclass AND c.relname ~ '^telemetry_p[0-9]{8}$'
          AND (to_date(substr(c.relname, 12), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= p_raw_before
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM telemetry_default WHERE ts < p_raw_before;
    DELETE FROM telemetry_1m WHERE bucket < p_rollup_before;
    RETURN dropped;
END
$$;

-- 1-minute rollup: per device and minute, the sample count and min / max /
-- sum of each measurement (avg = sum / n; battery_temperature is optional,
-- so it has its own count). Buckets start on whole minutes of the Unix
-- epoch. Written only by ems_rollup_step, always recomputed from the raw
-- rows of a bucket (so it is exact, and replays cannot count twice).
CREATE TABLE telemetry_1m (
    device_id                text NOT NULL,
    bucket                   timestamptz NOT NULL,
    n                        integer NOT NULL,
    n_temp                   integer NOT NULL,
    battery_voltage_min      real,
    battery_voltage_max      real,
    battery_voltage_sum      double precision NOT NULL,
    battery_current_min      real,
    battery_current_max      real,
    battery_current_sum      double precision NOT NULL,
    battery_power_min        real,
    battery_power_max        real,
    battery_power_sum        double precision NOT NULL,
    battery_soc_min          real,
    battery_soc_max          real,
    battery_soc_sum          double precision NOT NULL,
    battery_temperature_min  real,
    battery_temperature_max  real,
    battery_temperature_sum  double precision NOT NULL,
    grid_voltage_min         real,
    grid_voltage_max         real,
    grid_voltage_sum         double precision NOT NULL,
    grid_power_min           real,
    grid_power_max           real,
    grid_power_sum           double precision NOT NULL,
    grid_frequency_min       real,
    grid_frequency_max       real,
    grid_frequency_sum       double precision NOT NULL,
    PRIMARY KEY (device_id, bucket)
);

-- Retention deletes by bucket alone; rows arrive in bucket order, so a
-- BRIN index finds old ones for almost nothing.
CREATE INDEX telemetry_1m_bucket ON telemetry_1m USING brin (bucket);

-- Every bucket before the watermark is in telemetry_1m (or queued in
-- ems_rollup_dirty); queries read the rollup below it and raw rows above.
CREATE TABLE ems_rollup_state (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    watermark timestamptz NOT NULL
);
INSERT INTO ems_rollup_state (watermark)
VALUES (date_bin('1 minute', now(), TIMESTAMPTZ '1970-01-01 00:00:00+00'));

-- Buckets that received rows after the watermark had passed them
-- (backfill, late packets). The writer's insert statement adds them; the
-- next ems_rollup_step recomputes them.
CREATE TABLE ems_rollup_dirty (
    device_id text NOT NULL,
    bucket    timestamptz NOT NULL,
    PRIMARY KEY (device_id, bucket)
);

-- The aggregate of raw rows as telemetry_1m columns, for one statement.
-- (A view keeps the two ems_rollup_step statements identical.)
CREATE VIEW ems_rollup_source AS
SELECT device_id, date_bin('1 minute', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket, ts,
       battery_voltage, battery_current, battery_power, battery_soc, battery_temperature,
       grid_voltage, grid_power, grid_frequency
FROM telemetry;

-- One step of the rollup, run by the DB writer every few seconds on its
-- writing connection (so it never races its own inserts): buckets that
-- closed since the last step (older than p_lag), then the dirty buckets.
-- Returns the number of buckets written. Recomputing a bucket from its raw
-- rows makes every step idempotent.
CREATE FUNCTION ems_rollup_step(p_lag interval DEFAULT '30 seconds') RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    w timestamptz;
    t timestamptz;
    a integer := 0;
    b integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7236577002) THEN
        RETURN 0; -- another step is running (a second writer): let it
    END IF;
    SELECT watermark INTO w FROM ems_rollup_state FOR UPDATE;
    t := date_bin('1 minute', now() - p_lag, TIMESTAMPTZ '1970-01-01 00:00:00+00');
    IF t > w THEN
        INSERT INTO telemetry_1m AS r
        SELECT device_id, bucket, count(*), count(battery_temperature),
               min(battery_voltage), max(battery_voltage), sum(battery_voltage::float8),
               min(battery_current), max(battery_current), sum(battery_current::float8),
               min(battery_power), max(battery_power), sum(battery_power::float8),
               min(battery_soc), max(battery_soc), sum(battery_soc::float8),
               min(battery_temperature), max(battery_temperature),
               coalesce(sum(battery_temperature::float8), 0),
               min(grid_voltage), max(grid_voltage), sum(grid_voltage::float8),
               min(grid_power), max(grid_power), sum(grid_power::float8),
               min(grid_frequency), max(grid_frequency), sum(grid_frequency::float8)
        FROM ems_rollup_source WHERE ts >= w AND ts < t
        GROUP BY device_id, bucket
        ON CONFLICT (device_id, bucket) DO UPDATE SET
            n = excluded.n, n_temp = excluded.n_temp,
            battery_voltage_min = excluded.battery_voltage_min, battery_voltage_max = excluded.battery_voltage_max,
            battery_voltage_sum = excluded.battery_voltage_sum,
            battery_current_min = excluded.battery_current_min, battery_current_max = excluded.battery_current_max,
            battery_current_sum = excluded.battery_current_sum,
            battery_power_min = excluded.battery_power_min, battery_power_max = excluded.battery_power_max,
            battery_power_sum = excluded.battery_power_sum,
            battery_soc_min = excluded.battery_soc_min, battery_soc_max = excluded.battery_soc_max,
            battery_soc_sum = excluded.battery_soc_sum,
            battery_temperature_min = excluded.battery_temperature_min,
            battery_temperature_max = excluded.battery_temperature_max,
            battery_temperature_sum = excluded.battery_temperature_sum,
            grid_voltage_min = excluded.grid_voltage_min, grid_voltage_max = excluded.grid_voltage_max,
            grid_voltage_sum = excluded.grid_voltage_sum,
            grid_power_min = excluded.grid_power_min, grid_power_max = excluded.grid_power_max,
            grid_power_sum = excluded.grid_power_sum,
            grid_frequency_min = excluded.grid_frequency_min, grid_frequency_max = excluded.grid_frequency_max,
            grid_frequency_sum = excluded.grid_frequency_sum;
        GET DIAGNOSTICS a = ROW_COUNT;
        UPDATE ems_rollup_state SET watermark = t;
    END IF;

    WITH d AS (DELETE FROM ems_rollup_dirty RETURNING device_id, bucket)
    INSERT INTO telemetry_1m AS r
    SELECT s.device_id, s.bucket, count(*), count(battery_temperature),
           min(battery_voltage), max(battery_voltage), sum(battery_voltage::float8),
           min(battery_current), max(battery_current), sum(battery_current::float8),
           min(battery_power), max(battery_power), sum(battery_power::float8),
           min(battery_soc), max(battery_soc), sum(battery_soc::float8),
           min(battery_temperature), max(battery_temperature),
           coalesce(sum(battery_temperature::float8), 0),
           min(grid_voltage), max(grid_voltage), sum(grid_voltage::float8),
           min(grid_power), max(grid_power), sum(grid_power::float8),
           min(grid_frequency), max(grid_frequency), sum(grid_frequency::float8)
    FROM d JOIN ems_rollup_source s
      ON s.device_id = d.device_id AND s.ts >= d.bucket AND s.ts < d.bucket + interval '1 minute'
    GROUP BY s.device_id, s.bucket
    ON CONFLICT (device_id, bucket) DO UPDATE SET
        n = excluded.n, n_temp = excluded.n_temp,
        battery_voltage_min = excluded.battery_voltage_min, battery_voltage_max = excluded.battery_voltage_max,
        battery_voltage_sum = excluded.battery_voltage_sum,
        battery_current_min = excluded.battery_current_min, battery_current_max = excluded.battery_current_max,
        battery_current_sum = excluded.battery_current_sum,
        battery_power_min = excluded.battery_power_min, battery_power_max = excluded.battery_power_max,
        battery_power_sum = excluded.battery_power_sum,
        battery_soc_min = excluded.battery_soc_min, battery_soc_max = excluded.battery_soc_max,
        battery_soc_sum = excluded.battery_soc_sum,
        battery_temperature_min = excluded.battery_temperature_min,
        battery_temperature_max = excluded.battery_temperature_max,
        battery_temperature_sum = excluded.battery_temperature_sum,
        grid_voltage_min = excluded.grid_voltage_min, grid_voltage_max = excluded.grid_voltage_max,
        grid_voltage_sum = excluded.grid_voltage_sum,
        grid_power_min = excluded.grid_power_min, grid_power_max = excluded.grid_power_max,
        grid_power_sum = excluded.grid_power_sum,
        grid_frequency_min = excluded.grid_frequency_min, grid_frequency_max = excluded.grid_frequency_max,
        grid_frequency_sum = excluded.grid_frequency_sum;
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN a + b;
END
$$;

-- The 1-hour rollup, as a view over the 1-minute one, for people and tools
-- writing SQL (the DB writer's queries re-bucket telemetry_1m directly so
-- that the time range reaches its index, and add the raw rows above the
-- watermark).
CREATE VIEW telemetry_1h AS
SELECT device_id,
       date_bin('1 hour', bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
       sum(n)::integer AS n, sum(n_temp)::integer AS n_temp,
       min(battery_voltage_min) AS battery_voltage_min, max(battery_voltage_max) AS battery_voltage_max,
       sum(battery_voltage_sum) AS battery_voltage_sum,
       min(battery_current_min) AS battery_current_min, max(battery_current_max) AS battery_current_max,
       sum(battery_current_sum) AS battery_current_sum,
       min(battery_power_min) AS battery_power_min, max(battery_power_max) AS battery_power_max,
       sum(battery_power_sum) AS battery_power_sum,
       min(battery_soc_min) AS battery_soc_min, max(battery_soc_max) AS battery_soc_max,
       sum(battery_soc_sum) AS battery_soc_sum,
       min(battery_temperature_min) AS battery_temperature_min,
       max(battery_temperature_max) AS battery_temperature_max,
       sum(battery_temperature_sum) AS battery_temperature_sum,
       min(grid_voltage_min) AS grid_voltage_min, max(grid_voltage_max) AS grid_voltage_max,
       sum(grid_voltage_sum) AS grid_voltage_sum,
       min(grid_power_min) AS grid_power_min, max(grid_power_max) AS grid_power_max,
       sum(grid_power_sum) AS grid_power_sum,
       min(grid_frequency_min) AS grid_frequency_min, max(grid_frequency_max) AS grid_frequency_max,
       sum(grid_frequency_sum) AS grid_frequency_sum
FROM telemetry_1m
GROUP BY 1, 2;

-- Partitions around now, so the first batch does not land in the default.
SELECT ems_ensure_partitions(now() - interval '8 days', now() + interval '2 days');
