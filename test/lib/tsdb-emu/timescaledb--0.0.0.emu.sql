-- EMULATION for the ems test suites (test/lib/tsdb-emu): NOT TimescaleDB.
-- A C function from the library, so that CREATE EXTENSION loads it (and its
-- _PG_init raises FATAL unless it was preloaded, like the real extension).
CREATE FUNCTION ems_tsdb_emulation() RETURNS text
    AS 'MODULE_PATHNAME', 'ems_tsdb_emulation' LANGUAGE C STRICT;

-- Stand-ins of the views the DB writer reads, with the columns it uses
-- (TimescaleDB 2.x names), as tables a test can change.
CREATE SCHEMA timescaledb_information;
CREATE TABLE timescaledb_information.jobs (
    job_id integer PRIMARY KEY,
    application_name name NOT NULL,
    proc_name name NOT NULL,
    hypertable_name name
);
CREATE TABLE timescaledb_information.job_stats (
    job_id integer PRIMARY KEY,
    hypertable_name name,
    last_run_status text,
    next_start timestamptz,
    total_runs bigint NOT NULL DEFAULT 0,
    total_successes bigint NOT NULL DEFAULT 0,
    total_failures bigint NOT NULL DEFAULT 0
);
INSERT INTO timescaledb_information.jobs VALUES
    (1000, 'Compression Policy [1000]', 'policy_compression', 'telemetry'),
    (1001, 'Retention Policy [1001]', 'policy_retention', 'telemetry'),
    (1002, 'Refresh Continuous Aggregate Policy [1002]', 'policy_refresh_continuous_aggregate', '_materialized_hypertable_2');
INSERT INTO timescaledb_information.job_stats VALUES
    (1000, 'telemetry', 'Success', now() + interval '1 hour', 3, 3, 0),
    (1001, 'telemetry', 'Success', now() + interval '1 day', 1, 1, 0),
    (1002, '_materialized_hypertable_2', NULL, now() + interval '1 minute', 0, 0, 0);
