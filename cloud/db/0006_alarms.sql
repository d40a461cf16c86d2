-- 0006: alarms with their history, and the webhooks' delivery cursors
-- (issue 16 items 4 and 5; docs/alarms.md). Both storage modes.
--
-- The gateways evaluate the rules on live data and send what they decide as
-- durable link EVENTs (docs/protocol.md 5.4): alarm_raise, alarm_clear,
-- alarm_ack. This database is the arbiter between several gateways:
--
--   * at most one open (not cleared) alarm per (device, rule): a unique
--     partial index, and a raise that finds one open is a no-op, so two
--     gateways that both decide "raise" make one alarm;
--   * a raise is idempotent on (device, rule, raised_at), so a replayed
--     EVENT (the link resends what was not acknowledged) changes nothing;
--   * an offline raise is dropped when the device has connected again
--     since it went offline (its session_open is here): a raise from the
--     gateway it left cannot reopen an alarm the new gateway cleared.
--
-- alarm_events is the history and the webhooks' outbox. event_id is given
-- under a transaction-level advisory lock, so the ids of alarm events become
-- visible in id order (a transaction that took a smaller id always commits
-- before one that takes a larger id can start inserting), and a delivery
-- cursor "everything up to event_id N was delivered" never skips an event
-- that committed late.
--
-- ems_event of 0004 is kept under the name ems_event_0004 and the new
-- ems_event handles the alarm types and passes every other type to it; a
-- later migration that replaces ems_event must keep these branches.

CREATE TABLE alarms (
    alarm_id     bigserial PRIMARY KEY,
    device_id    text NOT NULL,
    rule         text NOT NULL,            -- error, sensor_fault, soc_low, offline
    severity     text NOT NULL DEFAULT 'warning',
    message      text,
    details      jsonb NOT NULL DEFAULT '{}',
    raised_at    timestamptz NOT NULL,
    raised_by    text,                      -- the gateway instance
    acked_at     timestamptz,
    acked_by     text,
    cleared_at   timestamptz,
    clear_reason text,
    UNIQUE (device_id, rule, raised_at)
);
CREATE UNIQUE INDEX alarms_open ON alarms (device_id, rule) WHERE cleared_at IS NULL;
CREATE INDEX alarms_device ON alarms (device_id, raised_at DESC);

CREATE TABLE alarm_events (
    event_id bigserial PRIMARY KEY,
    alarm_id bigint NOT NULL REFERENCES alarms ON DELETE CASCADE,
    kind     text NOT NULL CHECK (kind IN ('raised', 'acknowledged', 'cleared')),
    at       timestamptz NOT NULL,
    actor    text,
    UNIQUE (alarm_id, kind)
);

-- One row per webhook (named by its URL): every alarm event up to
-- last_event_id was delivered (or dead-lettered). A gateway delivers only
-- while it holds the lease (lease_owner, lease_until), so one gateway
-- delivers each event even when several run.
CREATE TABLE webhook_cursors (
    name          text PRIMARY KEY,
    last_event_id bigint NOT NULL DEFAULT 0,
    lease_owner   text,
    lease_until   timestamptz,
    delivered     bigint NOT NULL DEFAULT 0,
    dead          bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION ems_alarm_state(a alarms) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN a.cleared_at IS NOT NULL THEN 'cleared'
                WHEN a.acked_at IS NOT NULL THEN 'acknowledged'
                ELSE 'active' END
$$;

CREATE FUNCTION ems_alarm_json(a alarms) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object('alarm_id', a.alarm_id, 'device_id', a.device_id, 'rule', a.rule,
        'state', ems_alarm_state(a), 'severity', a.severity, 'message', a.message,
        'details', a.details, 'raised_at', ems_rfc3339(a.raised_at), 'raised_by', a.raised_by,
        'acked_at', ems_rfc3339(a.acked_at), 'acked_by', a.acked_by,
        'cleared_at', ems_rfc3339(a.cleared_at), 'clear_reason', a.clear_reason)
$$;

ALTER FUNCTION ems_event(jsonb) RENAME TO ems_event_0004;

CREATE FUNCTION ems_event(e jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text := e->>'type';
    id bigint;
    at timestamptz;
BEGIN
    IF t NOT IN ('alarm_raise', 'alarm_clear', 'alarm_ack') THEN
        PERFORM ems_event_0004(e);
        RETURN;
    END IF;
    -- Alarm events get their ids in commit order (see the top).
    PERFORM pg_advisory_xact_lock(hashtext('ems_alarm_events'));
    at := coalesce((e->>'at')::timestamptz, now());
    IF t = 'alarm_raise' THEN
        IF e->>'rule' = 'offline' AND e ? 'since' AND EXISTS (
               SELECT 1 FROM device_sessions
               WHERE device_id = e->>'device_id' AND connected_at > (e->>'since')::timestamptz) THEN
            RETURN;
        END IF;
        INSERT INTO alarms (device_id, rule, severity, message, details, raised_at, raised_by)
        VALUES (e->>'device_id', e->>'rule', coalesce(e->>'severity', 'warning'), e->>'message',
                coalesce(e->'details', '{}'::jsonb), at, e->>'gateway')
        ON CONFLICT DO NOTHING
        RETURNING alarm_id INTO id;
        IF id IS NOT NULL THEN
            INSERT INTO alarm_events (alarm_id, kind, at, actor)
            VALUES (id, 'raised', at, e->>'gateway');
        END IF;
    ELSIF t = 'alarm_clear' THEN
        UPDATE alarms SET cleared_at = at, clear_reason = e->>'reason'
        WHERE device_id = e->>'device_id' AND rule = e->>'rule' AND cleared_at IS NULL
          AND raised_at <= at
        RETURNING alarm_id INTO id;
        IF id IS NOT NULL THEN
            INSERT INTO alarm_events (alarm_id, kind, at, actor)
            VALUES (id, 'cleared', at, e->>'gateway') ON CONFLICT DO NOTHING;
        END IF;
    ELSE
        UPDATE alarms SET acked_at = at, acked_by = e->>'by'
        WHERE alarm_id = (e->>'alarm_id')::bigint AND acked_at IS NULL
        RETURNING alarm_id INTO id;
        IF id IS NOT NULL THEN
            INSERT INTO alarm_events (alarm_id, kind, at, actor)
            VALUES (id, 'acknowledged', at, e->>'by') ON CONFLICT DO NOTHING;
        END IF;
    END IF;
END
$$;
