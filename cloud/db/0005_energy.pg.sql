-- 0005_energy (plain PostgreSQL): the edge's energy counters (docs/energy.md).
--
-- Raw rows gain the counters of the telemetry packet's optional `energy`
-- object: the start of their series and four monotonic counters in whole
-- mWh (the edge sends at most three decimals of Wh, so bigint is exact). A
-- packet without `energy` (an older edge) stores NULL in all five.
--
-- The 1-minute rollup gains, per device and minute, the number of samples
-- with energy and the first and last sample's counters, each as one int8[]
-- vector [series start ms, charged, discharged, import, export]. Within a
-- series every counter is non-decreasing in time, so the vector's
-- lexicographic min is the first sample of the oldest series in the minute
-- and its max the last sample of the newest one: two plain min/max
-- aggregates, which a TimescaleDB continuous aggregate can compute as well
-- (0005_energy.tsdb.sql). Day and month energy is computed at query time
-- from these minutes (ems_energy_delta, cloud/dbwriter/query.c).

ALTER TABLE telemetry
    ADD COLUMN energy_since          timestamptz,
    ADD COLUMN energy_charged_mwh    bigint,
    ADD COLUMN energy_discharged_mwh bigint,
    ADD COLUMN energy_import_mwh     bigint,
    ADD COLUMN energy_export_mwh     bigint;

ALTER TABLE telemetry_1m
    ADD COLUMN n_energy     integer NOT NULL DEFAULT 0,
    ADD COLUMN energy_first bigint[],
    ADD COLUMN energy_last  bigint[];

-- One sample's counters as the vector the rollups aggregate; NULL for a
-- packet without energy (min/max skip it).
CREATE FUNCTION ems_energy_vec(p_since timestamptz, p_c bigint, p_d bigint, p_i bigint, p_e bigint)
RETURNS bigint[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_since IS NULL THEN NULL
                ELSE ARRAY[(extract(epoch FROM (p_since - TIMESTAMPTZ 'epoch')) * 1000)::bigint,
                           p_c, p_d, p_i, p_e] END
$$;

-- The energy (mWh) of counter k (2..5: charged, discharged, import,
-- export) that one rollup minute adds, from the vectors of the sample
-- before it (p_prev, the previous minute's last; NULL if none) and of its
-- own first and last samples. Between two samples of the same series the
-- energy is the difference of the counters; a different series, or a
-- counter that went down, is a reset: the new series counted from 0. A
-- gap between samples loses nothing, the counter covers it; its energy
-- goes to the minute of the later sample. With no earlier sample at all
-- the first one adds nothing (the energy before it has no known time).
CREATE FUNCTION ems_energy_delta(p_prev bigint[], p_first bigint[], p_last bigint[], k integer)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_prev IS NULL THEN 0
                WHEN p_prev[1] = p_first[1] AND p_first[k] >= p_prev[k] THEN p_first[k] - p_prev[k]
                ELSE p_first[k] END
         + CASE WHEN p_first[1] = p_last[1] AND p_last[k] >= p_first[k] THEN p_last[k] - p_first[k]
                ELSE p_last[k] END
$$;

-- The rows the rollup step aggregates, now with the energy vector.
CREATE OR REPLACE VIEW ems_rollup_source AS
SELECT device_id, date_bin('1 minute', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket, ts,
       battery_voltage, battery_current, battery_power, battery_soc, battery_temperature,
       grid_voltage, grid_power, grid_frequency, energy_since,
       ems_energy_vec(energy_since, energy_charged_mwh, energy_discharged_mwh,
                      energy_import_mwh, energy_export_mwh) AS energy
FROM telemetry;

-- The same name and columns as the TimescaleDB continuous aggregate, for
-- people and tools writing SQL (the DB writer adds the raw rows above the
-- watermark itself).
CREATE VIEW telemetry_energy_1m AS
SELECT device_id, bucket, n_energy, energy_first, energy_last
FROM telemetry_1m WHERE n_energy > 0;

-- Energy per device and hour: the minutes of the hour aggregated the same
-- way (min of the first vectors, max of the last ones), so that a month of
-- a fleet reads hours, not minutes. `minutes` counts the minutes with
-- energy (the coverage). Written only by ems_energy_hours, always
-- recomputed from telemetry_1m (idempotent, like the minutes).
CREATE TABLE telemetry_energy_1h (
    device_id    text NOT NULL,
    bucket       timestamptz NOT NULL,
    n_energy     integer NOT NULL,
    minutes      integer NOT NULL,
    energy_first bigint[] NOT NULL,
    energy_last  bigint[] NOT NULL,
    PRIMARY KEY (device_id, bucket)
);
CREATE INDEX telemetry_energy_1h_bucket ON telemetry_energy_1h USING brin (bucket);

-- Recomputes the (device, hour) rows of the minutes just written by the
-- rollup step (p_dev[i], p_minute[i]; duplicates are fine).
CREATE FUNCTION ems_energy_hours(p_dev text[], p_minute timestamptz[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    done integer := 0;
BEGIN
    IF p_dev IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO telemetry_energy_1h AS r
    SELECT x.d, x.h, a.n, a.minutes, a.f, a.l
    FROM (SELECT DISTINCT d, date_bin('1 hour', m, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS h
          FROM unnest(p_dev, p_minute) AS u(d, m)) x
    CROSS JOIN LATERAL (
        SELECT sum(n_energy)::integer AS n, count(*)::integer AS minutes,
               min(energy_first) AS f, max(energy_last) AS l
        FROM telemetry_1m t
        WHERE t.device_id = x.d AND t.bucket >= x.h AND t.bucket < x.h + interval '1 hour'
          AND t.n_energy > 0) a
    WHERE a.n > 0
    ON CONFLICT (device_id, bucket) DO UPDATE SET
        n_energy = excluded.n_energy, minutes = excluded.minutes,
        energy_first = excluded.energy_first, energy_last = excluded.energy_last;
    GET DIAGNOSTICS done = ROW_COUNT;
    RETURN done;
END
$$;

-- Retention of 0002 plus the energy hours (kept as long as the minutes).
CREATE OR REPLACE FUNCTION ems_apply_retention(p_raw_before timestamptz, p_rollup_before timestamptz)
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
    DELETE FROM telemetry_energy_1h WHERE bucket < p_rollup_before;
    RETURN dropped;
END
$$;

-- ems_rollup_step of 0003 with the three energy columns, and the energy
-- hours of the minutes it wrote (same bounds, barrier and queue; see
-- 0003_rollup_queue.pg.sql for the reasoning).
DROP FUNCTION ems_rollup_step(interval, integer, interval);
CREATE FUNCTION ems_rollup_step(p_lag interval DEFAULT '30 seconds',
                                p_max_buckets integer DEFAULT 1000,
                                p_max_span interval DEFAULT '10 minutes',
                                OUT swept integer, OUT recomputed integer, OUT more boolean)
LANGUAGE plpgsql AS $$
DECLARE
    w timestamptz;
    m timestamptz;
    e timestamptz;
    t timestamptz;
    edev text[];
    emin timestamptz[];
BEGIN
    swept := 0;
    recomputed := 0;
    more := false;
    IF NOT pg_try_advisory_xact_lock(7236577002) THEN
        RETURN; -- another step is running (a second writer): let it
    END IF;

    -- The barrier (see ems_rollup_barrier_key): inserts that may have read
    -- a mark older than the current one are all committed after this.
    PERFORM pg_advisory_lock(ems_rollup_barrier_key());
    PERFORM pg_advisory_unlock(ems_rollup_barrier_key());

    SELECT watermark, mark INTO w, m FROM ems_rollup_state FOR UPDATE;
    -- Sweep [w, e): up to the mark that an earlier step published (rows
    -- below it that were inserted since are queued), at most p_max_span.
    e := least(m, w + p_max_span);
    IF e > w THEN
        WITH ins AS (
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
               min(grid_frequency), max(grid_frequency), sum(grid_frequency::float8),
               count(energy_since)::integer, min(energy), max(energy)
        FROM ems_rollup_source WHERE ts >= w AND ts < e
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
            grid_frequency_sum = excluded.grid_frequency_sum,
            n_energy = excluded.n_energy, energy_first = excluded.energy_first,
            energy_last = excluded.energy_last
        RETURNING device_id, bucket, n_energy)
        SELECT count(*)::integer, array_agg(device_id) FILTER (WHERE n_energy > 0),
               array_agg(bucket) FILTER (WHERE n_energy > 0)
        INTO swept, edev, emin FROM ins;
        PERFORM ems_energy_hours(edev, emin);
    END IF;
    -- The next mark: minutes that closed (older than p_lag). Inserts see it
    -- once this transaction commits; the next step sweeps up to it.
    t := greatest(m, date_bin('1 minute', now() - p_lag, TIMESTAMPTZ '1970-01-01 00:00:00+00'));
    UPDATE ems_rollup_state SET watermark = e, mark = t WHERE e > w OR t > m;
    -- Work is left when the sweep is behind or the queue holds more
    -- entries than this step takes.
    more := e < m OR (SELECT count(*) >= p_max_buckets
                      FROM (SELECT 1 FROM ems_rollup_queue LIMIT p_max_buckets) q);

    -- The queue: at most p_max_buckets buckets, oldest entries first. One
    -- statement, so the DELETE and the recomputation share one snapshot.
    WITH pick AS (
        SELECT DISTINCT device_id, bucket
        FROM (SELECT device_id, bucket FROM ems_rollup_queue ORDER BY id LIMIT p_max_buckets) q
    ), done AS (
        -- Every visible entry of the picked buckets, found through the
        -- (device_id, bucket) index one bucket at a time (OFFSET 0 keeps
        -- the planner from turning this into a scan of the whole queue).
        DELETE FROM ems_rollup_queue
        WHERE ctid = ANY (ARRAY(
            SELECT x.ctid FROM pick p CROSS JOIN LATERAL (
                SELECT e.ctid FROM ems_rollup_queue e
                WHERE e.device_id = p.device_id AND e.bucket = p.bucket OFFSET 0) x))
    ), ins AS (
    INSERT INTO telemetry_1m AS r
    SELECT p.device_id, p.bucket, a.*
    FROM pick p CROSS JOIN LATERAL (
        SELECT count(*)::integer AS n, count(battery_temperature)::integer AS n_temp,
               min(battery_voltage), max(battery_voltage), sum(battery_voltage::float8),
               min(battery_current), max(battery_current), sum(battery_current::float8),
               min(battery_power), max(battery_power), sum(battery_power::float8),
               min(battery_soc), max(battery_soc), sum(battery_soc::float8),
               min(battery_temperature), max(battery_temperature),
               coalesce(sum(battery_temperature::float8), 0),
               min(grid_voltage), max(grid_voltage), sum(grid_voltage::float8),
               min(grid_power), max(grid_power), sum(grid_power::float8),
               min(grid_frequency), max(grid_frequency), sum(grid_frequency::float8),
               count(energy_since)::integer,
               min(ems_energy_vec(energy_since, energy_charged_mwh, energy_discharged_mwh,
                                  energy_import_mwh, energy_export_mwh)),
               max(ems_energy_vec(energy_since, energy_charged_mwh, energy_discharged_mwh,
                                  energy_import_mwh, energy_export_mwh))
        FROM telemetry t
        WHERE t.device_id = p.device_id AND t.ts >= p.bucket AND t.ts < p.bucket + interval '1 minute'
    ) a
    WHERE a.n > 0 -- rows dropped by retention since: nothing to write
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
        grid_frequency_sum = excluded.grid_frequency_sum,
            n_energy = excluded.n_energy, energy_first = excluded.energy_first,
            energy_last = excluded.energy_last
    RETURNING device_id, bucket, n_energy)
    SELECT count(*)::integer, array_agg(device_id) FILTER (WHERE n_energy > 0),
           array_agg(bucket) FILTER (WHERE n_energy > 0)
    INTO recomputed, edev, emin FROM ins;
    PERFORM ems_energy_hours(edev, emin);
END
$$;
