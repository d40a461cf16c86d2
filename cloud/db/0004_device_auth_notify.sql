-- 0004: push credential changes to the gateways (both storage modes).
--
-- A change of a device's credential (a rotated token, a revocation, an undo
-- of one, a deleted device) sends NOTIFY ems_device_auth with the device id
-- as payload. PostgreSQL delivers a notification only when the transaction
-- that sent it commits, and only to sessions that LISTEN at that moment:
-- the DB writer listens on a connection of its own and forwards each one to
-- its gateways (a CREDENTIALS link frame), which drop the cached credential
-- and re-check the device's live connection at once. Changes made while
-- nobody listened are covered by the DB writer telling the gateways to
-- re-check everything whenever it (re)starts listening, and by the
-- gateway's periodic re-check (recheck_s).
--
-- Any client that changes devices gets this, not only emsctl: the trigger
-- is the single place where a credential can change. A new device is
-- announced too, so a gateway forgets its cached "no such device" answer
-- (auth_negative_s) at once.
--
-- ems_event gains 'user_rehash': the gateway's rehash of a password to the
-- current PBKDF2 iteration count, applied only while the stored hash is the
-- one the password was checked against (a compare-and-set, so a password
-- change or a delete in the meantime wins).

CREATE FUNCTION ems_device_auth_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('ems_device_auth', NEW.device_id);
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('ems_device_auth', OLD.device_id);
        RETURN OLD;
    END IF;
    IF NEW.token_hash IS DISTINCT FROM OLD.token_hash
       OR NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
       OR NEW.device_id IS DISTINCT FROM OLD.device_id THEN
        PERFORM pg_notify('ems_device_auth', OLD.device_id);
        IF NEW.device_id IS DISTINCT FROM OLD.device_id THEN
            PERFORM pg_notify('ems_device_auth', NEW.device_id);
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER devices_auth_notify
    AFTER INSERT OR UPDATE OF token_hash, revoked_at, device_id OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION ems_device_auth_notify();

-- ems_event of 0001 with one more branch, 'user_rehash'.
CREATE OR REPLACE FUNCTION ems_event(e jsonb) RETURNS void
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
    ELSIF t = 'user_rehash' THEN
        UPDATE users SET password_hash = e->>'password_hash', updated_at = now()
        WHERE name = e->>'name' AND password_hash = e->>'old_hash';
    ELSIF t = 'user_delete' THEN
        DELETE FROM users WHERE name = e->>'name';
    ELSE
        RAISE EXCEPTION 'unknown event type %', coalesce(t, '(none)')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
