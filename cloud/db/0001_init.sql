-- 0001_init: devices, users, commands and their history, device sessions,
-- and the function that applies the gateway's events (docs/protocol.md 5.4).
-- Runs in both storage modes (plain PostgreSQL and TimescaleDB), inside one
-- transaction; the migration runner records it in schema_migrations.

-- The wire vocabulary (common/status.h). Stored by name, never by the C
-- enums' numeric values, which the header says may change.
CREATE TYPE ems_state AS ENUM ('IDLE', 'CHARGING', 'DISCHARGING', 'FULL', 'EMPTY', 'ERROR');
CREATE TYPE ems_mode AS ENUM ('AUTO', 'MANUAL');
CREATE TYPE ems_target_mode AS ENUM ('AUTO', 'MANUAL_CHARGE', 'MANUAL_DISCHARGE', 'MANUAL_IDLE');

-- telemetry.error_flags is a bitmask with these bit positions, frozen here
-- (bit 0 = OVERHEAT ... bit 6 = GRID_FAULT, the wire order). This turns it
-- back into the wire's list of names, for people writing SQL by hand.
CREATE FUNCTION ems_fault_names(flags integer) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(n ORDER BY i), '{}')
    FROM unnest(ARRAY['OVERHEAT', 'UNDERTEMP', 'OVERVOLTAGE', 'UNDERVOLTAGE',
                      'OVERCURRENT', 'SENSOR_FAULT', 'GRID_FAULT']) WITH ORDINALITY AS f(n, i)
    WHERE flags & (1 << (i::integer - 1)) <> 0
$$;

-- RFC 3339 in UTC with milliseconds, the wire's form of a time.
CREATE FUNCTION ems_rfc3339(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- Devices and their credential: only the SHA-256 of the token is stored
-- (docs/protocol.md, section 1).
CREATE TABLE devices (
    device_id  text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    token_hash text NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Dashboard users; password_hash is the PBKDF2 string the gateway makes.
CREATE TABLE users (
    name          text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password_hash text NOT NULL CHECK (length(password_hash) > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Commands (the audit trail): who asked what of which device, and every
-- status it went through. No foreign key to devices: the audit outlives a
-- deleted device.
CREATE TABLE commands (
    command_id text PRIMARY KEY CHECK (command_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    device_id  text NOT NULL,
    action     text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    created_by text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    status     text NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX commands_device_created ON commands (device_id, created_at DESC);
CREATE INDEX commands_created ON commands (created_at DESC);

-- One row per status change; the key makes a replayed event a no-op.
CREATE TABLE command_events (
    command_id text NOT NULL REFERENCES commands ON DELETE CASCADE,
    status     text NOT NULL CHECK (status ~ '^[a-z_]{1,32}$'),
    at         timestamptz NOT NULL,
    reason     text,
    message    text,
    actor      text,
    PRIMARY KEY (command_id, at, status)
);

-- Device connections as the gateway saw them. A session is identified by
-- the device and the moment it connected, so open and close events can be
-- replayed in any number.
CREATE TABLE device_sessions (
    device_id       text NOT NULL,
    connected_at    timestamptz NOT NULL,
    disconnected_at timestamptz,
    remote          text,
    gateway         text,
    reason          text,
    PRIMARY KEY (device_id, connected_at)
);
CREATE INDEX device_sessions_connected ON device_sessions (connected_at DESC);

-- Applies one event from the gateway. Every branch is idempotent, because
-- the link replays frames that were committed but not yet acknowledged.
-- Bad input raises an error of class 22 or 23, which the DB writer treats
-- as permanent (REJECT), never as a reason to retry.
CREATE FUNCTION ems_event(e jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text := e->>'type';
    st text;
BEGIN
    IF t = 'command' THEN
        st := coalesce(e->>'status', 'pending');
        INSERT INTO commands (command_id, device_id, action, payload, created_by,
                              created_at, expires_at, status, updated_at)
        VALUES (e->>'command_id', e->>'device_id', e->>'action',
                coalesce(e->'payload', '{}'::jsonb), e->>'created_by',
                (e->>'created_at')::timestamptz, (e->>'expires_at')::timestamptz,
                st, (e->>'created_at')::timestamptz)
        ON CONFLICT (command_id) DO NOTHING;
        IF FOUND THEN
            INSERT INTO command_events (command_id, status, at, actor)
            VALUES (e->>'command_id', st, (e->>'created_at')::timestamptz, e->>'created_by')
            ON CONFLICT DO NOTHING;
        END IF;
    ELSIF t = 'command_status' THEN
        INSERT INTO command_events (command_id, status, at, reason, message, actor)
        VALUES (e->>'command_id', e->>'status', (e->>'at')::timestamptz,
                e->>'reason', e->>'message', e->>'actor')
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            -- The newest status wins, whatever order the events commit in.
            UPDATE commands SET status = e->>'status', updated_at = (e->>'at')::timestamptz
            WHERE command_id = e->>'command_id' AND updated_at <= (e->>'at')::timestamptz;
        END IF;
    ELSIF t = 'session_open' THEN
        INSERT INTO device_sessions (device_id, connected_at, remote, gateway)
        VALUES (e->>'device_id', (e->>'connected_at')::timestamptz, e->>'remote', e->>'gateway')
        ON CONFLICT DO NOTHING;
    ELSIF t = 'session_close' THEN
        -- A close whose open was lost still records the session.
        INSERT INTO device_sessions (device_id, connected_at, disconnected_at, reason)
        VALUES (e->>'device_id', (e->>'connected_at')::timestamptz,
                (e->>'disconnected_at')::timestamptz, e->>'reason')
        ON CONFLICT (device_id, connected_at) DO UPDATE
            SET disconnected_at = excluded.disconnected_at, reason = excluded.reason;
    ELSIF t = 'device_add' THEN
        INSERT INTO devices (device_id, token_hash)
        VALUES (e->>'device_id', e->>'token_hash')
        ON CONFLICT (device_id) DO UPDATE SET token_hash = excluded.token_hash, revoked_at = NULL;
    ELSIF t = 'device_revoke' THEN
        UPDATE devices SET revoked_at = coalesce(revoked_at, (e->>'at')::timestamptz, now())
        WHERE device_id = e->>'device_id';
    ELSIF t = 'user_upsert' THEN
        INSERT INTO users (name, role, password_hash)
        VALUES (e->>'name', e->>'role', e->>'password_hash')
        ON CONFLICT (name) DO UPDATE
            SET role = excluded.role, password_hash = excluded.password_hash, updated_at = now();
    ELSIF t = 'user_delete' THEN
        DELETE FROM users WHERE name = e->>'name';
    ELSE
        RAISE EXCEPTION 'unknown event type %', coalesce(t, '(none)')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
