-- 0003_rollup_queue (plain PostgreSQL): the 1-minute rollup off the insert
-- path, with work bounded per step (docs/storage.md section 3).
--
-- Before: ems_rollup_step ran on the writer's inserting connection and
-- recomputed every dirty bucket in one statement that the planner turned
-- into a hash join over all rows of the dirty devices: four devices
-- backfilling a few old minutes each made one step run for minutes, and no
-- batch committed (no device got an ACK) meanwhile.
--
-- Now:
--   * the DB writer runs the step on its own connection, so batches keep
--     committing while it runs;
--   * late rows go to an append-only queue (ems_rollup_queue), one entry
--     per (device, minute) per inserting transaction, written in that
--     transaction; the step takes at most p_max_buckets distinct buckets,
--     recomputes each with an index range scan of (device_id, ts), and
--     deletes the queue entries it saw, all in one statement (one
--     snapshot): an entry it deletes belongs to a committed insert whose
--     rows that same snapshot sees, and an entry committed later is not
--     visible to the DELETE, so it stays for the next step. The queue has
--     no unique key on purpose: an insert never waits for the step;
--   * the watermark sweep is bounded too (p_max_span per step), and its
--     race with inserts that run concurrently is closed by a second line,
--     `mark` (see ems_rollup_step).

-- Where inserts start marking rows late. mark >= watermark; the step
-- publishes a new mark, and the next step aggregates only up to the mark
-- an earlier step published (after a barrier, see below).
ALTER TABLE ems_rollup_state ADD COLUMN mark timestamptz;
UPDATE ems_rollup_state SET mark = watermark;
ALTER TABLE ems_rollup_state ALTER COLUMN mark SET NOT NULL;

CREATE TABLE ems_rollup_queue (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id text NOT NULL,
    bucket    timestamptz NOT NULL
);
-- The step deletes every visible entry of the buckets it took.
CREATE INDEX ems_rollup_queue_bucket ON ems_rollup_queue (device_id, bucket);

-- What was queued under the old scheme.
INSERT INTO ems_rollup_queue (device_id, bucket) SELECT device_id, bucket FROM ems_rollup_dirty;
DELETE FROM ems_rollup_dirty;

-- A DB writer of the previous version still inserts into ems_rollup_dirty
-- (with ON CONFLICT DO NOTHING): send its rows to the queue, inside its
-- transaction, and store nothing in the old table.
CREATE FUNCTION ems_rollup_dirty_redirect() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ems_rollup_queue (device_id, bucket) VALUES (NEW.device_id, NEW.bucket);
    RETURN NULL;
END
$$;
CREATE TRIGGER ems_rollup_dirty_redirect BEFORE INSERT ON ems_rollup_dirty
    FOR EACH ROW EXECUTE FUNCTION ems_rollup_dirty_redirect();

-- The barrier between inserts and the watermark sweep. Every inserting
-- transaction of the DB writer first takes pg_advisory_xact_lock_shared on
-- this key, then (in a later statement, so with a later snapshot) reads
-- `mark` and queues its rows older than the mark. The step takes and at
-- once releases the exclusive lock: that waits for every insert in flight,
-- and nothing else (the lock queue is fair, so an insert waits at most for
-- the one that was in flight). After it, every insert that read an older
-- mark has committed, and the sweep's snapshot sees its rows.
CREATE FUNCTION ems_rollup_barrier_key() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 7236577003::bigint';

DROP FUNCTION ems_rollup_step(interval);

-- One step of the rollup, run by the DB writer on its own connection every
-- --rollup-interval-ms, or right away again while `more` says there is a
-- backlog. Work per step is bounded: the sweep covers at most p_max_span of
-- closed minutes (older than p_lag), the queue at most p_max_buckets
-- buckets. Returns the 1-minute rows written by the sweep (`swept`), the
-- queued buckets recomputed (`recomputed`), and whether work is left.
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
            grid_frequency_sum = excluded.grid_frequency_sum;
        GET DIAGNOSTICS swept = ROW_COUNT;
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
    )
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
               min(grid_frequency), max(grid_frequency), sum(grid_frequency::float8)
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
        grid_frequency_sum = excluded.grid_frequency_sum;
    GET DIAGNOSTICS recomputed = ROW_COUNT;
END
$$;
