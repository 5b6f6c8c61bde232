-- 008: every webhook registration, webhook event and activity belongs to a workspace;
-- what cannot be placed moves to legacy_archive, and activities.payload goes there too.
--
-- Webhook events and activities are rewritten, not updated: each gets a new table,
-- written in one pass from the old one (an UPDATE writes a new version of every row,
-- payload included, and maintains each index and foreign key row by row). Keys,
-- foreign keys and indexes are built once the new tables are filled, one sorted pass
-- or one join each. Nothing leaves public before a copy of it is in legacy_archive:
-- the old events table is dropped only once the archive has the events that leave,
-- and the old activities table, stripped to (id, payload), becomes
-- legacy_archive.activity_payloads. One transaction: a failure anywhere, renames
-- included, leaves every table as it was. (docs/performance.md has the timings.)

-- A rewritten table keeps its columns, constraints, indexes, owner and privileges
-- (rebuilt below), but nothing else of the old table would follow it: refuse, before
-- anything is changed, rather than lose a trigger, a row-level security policy or a
-- column privilege somebody added.
DO $$
DECLARE
    rel   regclass;
    found text;
BEGIN
    FOREACH rel IN ARRAY ARRAY['public.webhook_events', 'public.activities']::regclass[] LOOP
        SELECT string_agg(what, ', ') INTO found
        FROM (
            SELECT 'trigger ' || quote_ident(tgname) AS what
            FROM pg_trigger WHERE tgrelid = rel AND NOT tgisinternal
            UNION ALL
            SELECT 'policy ' || quote_ident(polname) FROM pg_policy WHERE polrelid = rel
            UNION ALL
            SELECT 'row level security' FROM pg_class WHERE oid = rel AND relrowsecurity
            UNION ALL
            SELECT 'privileges on column ' || quote_ident(attname)
            FROM pg_attribute WHERE attrelid = rel AND attnum > 0 AND attacl IS NOT NULL
        ) extras;
        IF found IS NOT NULL THEN
            RAISE EXCEPTION '008 rewrites % into a new table, which would not keep its %', rel, found
                USING HINT = 'Drop them before 008 and re-create them on the new table after it.';
        END IF;
    END LOOP;
END
$$;

-- The FK from 005 is dropped around the registrations' backfill (one trigger call per
-- row otherwise) and re-added at the end, validated by one join.
ALTER TABLE webhook_registrations DROP CONSTRAINT webhook_registrations_workspace_id_fkey;

-- Archive tables: the pre-005 columns, plus when the row was archived. No FKs: the
-- rows they would point at are gone, which is why these rows are here.
CREATE TABLE legacy_archive.webhook_registrations (
    id          bigint PRIMARY KEY,
    user_id     bigint,
    target_url  text NOT NULL,
    event_types text[] NOT NULL,
    secret      text NOT NULL,
    active      boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE legacy_archive.webhook_events (
    id              bigint PRIMARY KEY,
    registration_id bigint NOT NULL,
    event_type      text NOT NULL,
    body            jsonb NOT NULL,
    status          text NOT NULL,
    attempts        int NOT NULL,
    created_at      timestamptz NOT NULL,
    processed_at    timestamptz,
    archived_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE legacy_archive.activities (
    id          bigint PRIMARY KEY,
    user_id     bigint,
    action      text NOT NULL,
    payload     jsonb,
    created_at  timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);

-- Webhook registrations ------------------------------------------------------------

-- A registration with a user belongs to that user's default workspace. Rows given a
-- workspace since 005 keep it.
UPDATE webhook_registrations r
SET workspace_id = u.default_workspace_id
FROM users u
WHERE u.id = r.user_id
  AND r.workspace_id IS NULL;

-- Webhook events ---------------------------------------------------------------------

-- A registration whose user was deleted has no workspace to go to: its events, then
-- itself, move to the archive. Every other event belongs where its registration does.
-- The old table's key and index go with it; the new table takes their names.
ALTER TABLE webhook_events RENAME TO webhook_events_before_008;
ALTER TABLE webhook_events_before_008 RENAME CONSTRAINT webhook_events_pkey TO webhook_events_before_008_pkey;
ALTER SEQUENCE webhook_events_id_seq RENAME TO webhook_events_before_008_id_seq;
DROP INDEX idx_webhook_events_registration;

INSERT INTO legacy_archive.webhook_events
    (id, registration_id, event_type, body, status, attempts, created_at, processed_at)
SELECT e.id, e.registration_id, e.event_type, e.body, e.status, e.attempts, e.created_at, e.processed_at
FROM webhook_events_before_008 e
JOIN webhook_registrations r ON r.id = e.registration_id
WHERE r.user_id IS NULL
  AND r.workspace_id IS NULL;

CREATE TABLE webhook_events AS
SELECT e.id, e.registration_id, e.event_type, e.body, e.status, e.attempts, e.created_at,
       e.processed_at, r.workspace_id
FROM webhook_events_before_008 e
JOIN webhook_registrations r ON r.id = e.registration_id
WHERE NOT (r.user_id IS NULL AND r.workspace_id IS NULL);

-- The columns, defaults and CHECK of 004 + 005, declared on the new table and checked
-- in one scan.
ALTER TABLE webhook_events
    ALTER COLUMN id SET NOT NULL,
    ALTER COLUMN registration_id SET NOT NULL,
    ALTER COLUMN event_type SET NOT NULL,
    ALTER COLUMN body SET NOT NULL,
    ALTER COLUMN status SET NOT NULL,
    ALTER COLUMN status SET DEFAULT 'pending',
    ALTER COLUMN attempts SET NOT NULL,
    ALTER COLUMN attempts SET DEFAULT 0,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN workspace_id SET NOT NULL,
    ADD CONSTRAINT webhook_events_status_check
        CHECK (status IN ('pending', 'processing', 'delivered', 'failed'));
ALTER TABLE webhook_events ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY;

-- Activities -----------------------------------------------------------------------

-- Every activity gets a workspace and loses its payload. Rewriting the payloads is the
-- costly part (they are most of the table's bytes), so they are never rewritten: a new,
-- narrow public.activities is written from the old table, and the old table itself,
-- stripped of every column but id and payload, becomes
-- legacy_archive.activity_payloads. Dropping a column only marks it dropped (no
-- rewrite), so the archive keeps the old rows' bytes on disk until they are next
-- updated; nobody reads them.
ALTER TABLE activities RENAME TO activities_before_008;
ALTER TABLE activities_before_008 RENAME CONSTRAINT activities_pkey TO activities_before_008_pkey;
ALTER SEQUENCE activities_id_seq RENAME TO activities_before_008_id_seq;
-- The old table keeps neither: they go now so that the new table can take the names.
ALTER TABLE activities_before_008 DROP CONSTRAINT activities_user_id_fkey;
DROP INDEX idx_activities_user;

-- The new activities, written in one pass straight from the old table. The workspace
-- an activity's payload names counts when "workspace_id" is
--   * a JSON number with an integral value in bigint range (30, 30.0 and 3e1 all
--     name 30; 30.5 and 1e400 name nothing), or
--   * a JSON string of ASCII digits only, leading zeros allowed ("007" names 7;
--     " 7", "+7", "-7", "7.0" and "" name nothing), whose value fits bigint,
-- and that workspace exists and the activity has no user or its user is a member
-- there. Otherwise the user's default workspace applies; with neither, NULL: the
-- activity goes to the archive, just below.
-- Every cast sits behind a CASE guard (WHERE/AND evaluation order is not
-- guaranteed), so no payload can raise: NULL, arrays, scalars and JSON null yield
-- no "workspace_id" at all, and a digit string is measured before it is cast (up to
-- 18 significant digits always fit; 19 are compared with bigint's maximum first).
-- The named workspace is computed once per activity, as a bigint, in a LATERAL
-- subquery: PostgreSQL evaluates it with the scan of the old table and hands the
-- value up, where an expression written into the join condition would be evaluated
-- again for every match. Unlike a subquery behind OFFSET 0, it leaves the whole
-- statement free to run in parallel workers; the planner does not know what parsing
-- the payloads costs, and is told that handing rows from the workers to the leader
-- is cheap by comparison (for this statement only).
SET LOCAL parallel_tuple_cost = 0.01;

CREATE TABLE activities AS
SELECT a.id, a.user_id, a.action, a.created_at,
       CASE
           WHEN w.id IS NOT NULL AND (a.user_id IS NULL OR m.user_id IS NOT NULL)
               THEN w.id
           ELSE u.default_workspace_id
       END AS workspace_id
FROM activities_before_008 a
LEFT JOIN LATERAL (
    SELECT CASE jsonb_typeof(a.payload -> 'workspace_id')
               WHEN 'number' THEN
                   CASE
                       WHEN (a.payload -> 'workspace_id')::numeric BETWEEN 1 AND 9223372036854775807
                        AND (a.payload -> 'workspace_id')::numeric = trunc((a.payload -> 'workspace_id')::numeric)
                           THEN (a.payload -> 'workspace_id')::bigint
                   END
               WHEN 'string' THEN
                   CASE
                       WHEN a.payload ->> 'workspace_id' ~ '^[0-9]+$' THEN
                           CASE
                               WHEN length(ltrim(a.payload ->> 'workspace_id', '0')) <= 18
                                   THEN (a.payload ->> 'workspace_id')::bigint
                               WHEN length(ltrim(a.payload ->> 'workspace_id', '0')) = 19 THEN
                                   CASE
                                       WHEN (a.payload ->> 'workspace_id')::numeric <= 9223372036854775807
                                           THEN (a.payload ->> 'workspace_id')::bigint
                                   END
                           END
                   END
           END AS id
) named ON true
LEFT JOIN workspaces w ON w.id = named.id
LEFT JOIN workspace_members m ON m.workspace_id = w.id AND m.user_id = a.user_id
LEFT JOIN users u ON u.id = a.user_id;

-- Back to the server's value for the rest of the transaction (RESET would also change
-- the session's, which outlives it).
SET LOCAL parallel_tuple_cost TO DEFAULT;

-- An activity with neither a named workspace nor a user's default moves, payload
-- included, from the old table (whose key is still there) to the archive.
WITH unplaced AS (
    DELETE FROM activities
    WHERE workspace_id IS NULL
    RETURNING id
), moved AS (
    DELETE FROM activities_before_008 a
    USING unplaced
    WHERE a.id = unplaced.id
    RETURNING a.id, a.user_id, a.action, a.payload, a.created_at
)
INSERT INTO legacy_archive.activities (id, user_id, action, payload, created_at)
SELECT id, user_id, action, payload, created_at
FROM moved;

-- The columns are those of 003 + 005 - payload, in that order; what CREATE TABLE AS
-- does not carry over is declared now, checked in one scan.
ALTER TABLE activities
    ALTER COLUMN id SET NOT NULL,
    ALTER COLUMN action SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN workspace_id SET NOT NULL;
ALTER TABLE activities ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY;

-- Owners and privileges ----------------------------------------------------------

-- Each new table has exactly the old one's owner and privileges (default privileges
-- may give it others), and so has its identity sequence, which continues where the
-- old one stood: an id is never handed out twice.
DO $$
DECLARE
    name text;
    old_table oid;
    old_seq   oid;
    new_table oid;
    new_seq   oid;
    pair      record;
    acl       record;
BEGIN
    FOREACH name IN ARRAY ARRAY['webhook_events', 'activities'] LOOP
        old_table := format('public.%I', name || '_before_008')::regclass;
        old_seq := format('public.%I', name || '_before_008_id_seq')::regclass;
        new_table := format('public.%I', name)::regclass;
        new_seq := pg_get_serial_sequence(format('public.%I', name), 'id')::regclass;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', new_table::regclass,
                       (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = old_table));
        EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s', new_seq::regclass, old_seq::regclass);
        FOR pair IN
            SELECT old_table AS old_oid, new_table AS new_oid, 'TABLE' AS kind
            UNION ALL
            SELECT old_seq, new_seq, 'SEQUENCE'
        LOOP
            FOR acl IN
                SELECT DISTINCT a.grantee
                FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                WHERE c.oid = pair.new_oid AND a.grantee <> c.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %s %s FROM %s', pair.kind, pair.new_oid::regclass,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type, a.is_grantable
                FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                WHERE c.oid = pair.old_oid AND a.grantee <> c.relowner
            LOOP
                EXECUTE format('GRANT %s ON %s %s TO %s%s', acl.privilege_type, pair.kind, pair.new_oid::regclass,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(acl.grantee)) END,
                               CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
            END LOOP;
        END LOOP;
    END LOOP;
END
$$;

-- Every event that leaves is in the archive, every other one in the new table.
DROP TABLE webhook_events_before_008;

-- Webhook registrations without a workspace -----------------------------------------

-- No event points at them any more, so nothing cascades.
WITH moved AS (
    DELETE FROM webhook_registrations
    WHERE user_id IS NULL
      AND workspace_id IS NULL
    RETURNING id, user_id, target_url, event_types, secret, active, created_at
)
INSERT INTO legacy_archive.webhook_registrations
    (id, user_id, target_url, event_types, secret, active, created_at)
SELECT id, user_id, target_url, event_types, secret, active, created_at
FROM moved;

ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_pkey PRIMARY KEY (id);
ALTER TABLE webhook_events
    ADD CONSTRAINT webhook_events_registration_id_fkey
    FOREIGN KEY (registration_id) REFERENCES webhook_registrations ON DELETE CASCADE;
CREATE INDEX idx_webhook_events_registration ON webhook_events (registration_id);

-- The old activities become the payload archive ------------------------------------

-- The old table becomes legacy_archive.activity_payloads (activity_id, payload): the
-- payloads of the activities that stay, JSON null included (it is not SQL NULL). No
-- payload, nothing to keep.
DELETE FROM activities_before_008
WHERE payload IS NULL;

ALTER TABLE activities_before_008
    DROP COLUMN user_id,
    DROP COLUMN action,
    DROP COLUMN created_at,
    DROP COLUMN workspace_id,
    ALTER COLUMN id DROP IDENTITY,
    ALTER COLUMN payload SET NOT NULL;
ALTER TABLE activities_before_008 RENAME COLUMN id TO activity_id;
ALTER TABLE activities_before_008 SET SCHEMA legacy_archive;
ALTER TABLE legacy_archive.activities_before_008 RENAME TO activity_payloads;
ALTER TABLE legacy_archive.activity_payloads
    RENAME CONSTRAINT activities_before_008_pkey TO activity_payloads_pkey;

-- Its owner and privileges as if it had been created here: the role running the
-- migration owns it (as it owns the other archive tables, and legacy_archive), and
-- nobody else has any privilege on it. The application role, which could read and
-- write activities, gets nothing in legacy_archive.
DO $$
DECLARE
    acl record;
BEGIN
    EXECUTE format('ALTER TABLE legacy_archive.activity_payloads OWNER TO %I', current_user);
    FOR acl IN
        SELECT DISTINCT a.grantee
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
        WHERE c.oid = 'legacy_archive.activity_payloads'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON TABLE legacy_archive.activity_payloads FROM %s',
                       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(acl.grantee)) END);
    END LOOP;
END
$$;

ALTER TABLE activities ADD CONSTRAINT activities_pkey PRIMARY KEY (id);
ALTER TABLE activities
    ADD CONSTRAINT activities_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users ON DELETE SET NULL;
CREATE INDEX idx_activities_user ON activities (user_id);

-- Constraints and indexes -----------------------------------------------------------

ALTER TABLE webhook_registrations ALTER COLUMN workspace_id SET NOT NULL;

ALTER TABLE webhook_registrations
    ADD CONSTRAINT webhook_registrations_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces ON DELETE CASCADE;
ALTER TABLE webhook_events
    ADD CONSTRAINT webhook_events_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces ON DELETE CASCADE;
ALTER TABLE activities
    ADD CONSTRAINT activities_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces ON DELETE CASCADE;

-- "The latest activities of a workspace": equality on workspace_id, then created_at
-- read backwards for ORDER BY created_at DESC LIMIT n. Also serves the cascade.
CREATE INDEX idx_activities_workspace ON activities (workspace_id, created_at);

-- Serve the cascades from workspaces.
CREATE INDEX idx_webhook_registrations_workspace ON webhook_registrations (workspace_id);
CREATE INDEX idx_webhook_events_workspace ON webhook_events (workspace_id);

-- Fresh statistics, so the planner picks the new indexes as soon as the application
-- runs; the new webhook_events and activities tables have none at all until then.
ANALYZE webhook_registrations (workspace_id), webhook_events, activities;
