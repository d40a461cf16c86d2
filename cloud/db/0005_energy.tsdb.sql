-- 0005_energy (TimescaleDB): the edge's energy counters (docs/energy.md),
-- the same columns and functions as 0005_energy.pg.sql. The existing
-- continuous aggregates stay as they are (changing their definition means
-- dropping them, and with them the materialized history older than the raw
-- retention); the energy minutes get a continuous aggregate of their own,
-- telemetry_energy_1m, with the columns the plain PostgreSQL path exposes
-- under the same name: per device and minute the number of samples with
-- energy and the first and last sample's vector (see the .pg file).

ALTER TABLE telemetry
    ADD COLUMN energy_since          timestamptz,
    ADD COLUMN energy_charged_mwh    bigint,
    ADD COLUMN energy_discharged_mwh bigint,
    ADD COLUMN energy_import_mwh     bigint,
    ADD COLUMN energy_export_mwh     bigint;

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

CREATE MATERIALIZED VIEW telemetry_energy_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id,
       time_bucket(INTERVAL '1 minute', ts) AS bucket,
       count(*)::integer AS n_energy,
       min(ems_energy_vec(energy_since, energy_charged_mwh, energy_discharged_mwh,
                          energy_import_mwh, energy_export_mwh)) AS energy_first,
       max(ems_energy_vec(energy_since, energy_charged_mwh, energy_discharged_mwh,
                          energy_import_mwh, energy_export_mwh)) AS energy_last
FROM telemetry
WHERE energy_since IS NOT NULL
GROUP BY device_id, time_bucket(INTERVAL '1 minute', ts)
WITH NO DATA;

-- The same refresh window and retention as telemetry_1m (0002).
SELECT add_continuous_aggregate_policy('telemetry_energy_1m',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_retention_policy('telemetry_energy_1m', INTERVAL '730 days');

-- Energy per device and hour, stacked on the minutes (the same min / max
-- of the vectors; `minutes` counts the minutes with energy), so that a
-- month of a fleet reads hours, not minutes.
CREATE MATERIALIZED VIEW telemetry_energy_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device_id,
       time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       sum(n_energy)::integer AS n_energy,
       count(*)::integer AS minutes,
       min(energy_first) AS energy_first,
       max(energy_last) AS energy_last
FROM telemetry_energy_1m
GROUP BY device_id, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('telemetry_energy_1h',
    start_offset => INTERVAL '8 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes');
SELECT add_retention_policy('telemetry_energy_1h', INTERVAL '730 days');
