-- 008: every webhook registration, webhook event and activity belongs to a workspace;
-- what cannot be placed moves to legacy_archive, and activities.payload goes there too.
-- Nothing is deleted from public before a copy of it is in legacy_archive: webhook
-- events are emptied and refilled only once the rows that leave are in the archive and
-- the rest in a temporary table; activities are written to a new table, and the old
-- one, stripped to (id, payload), becomes legacy_archive.activity_payloads.

-- The FKs from 005 are dropped around the bulk backfills (one trigger call per row
-- otherwise) and re-added at the end, validated by one join each. For the same reason
-- the rewritten tables' keys and indexes are built after the fill rather than
-- maintained row by row, in random order, during it.
ALTER TABLE webhook_registrations DROP CONSTRAINT webhook_registrations_workspace_id_fkey;
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_workspace_id_fkey;

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

-- A registration whose user was deleted has no workspace to go to: its events, then
-- itself, move to the archive. Every other event belongs where its registration does.
-- Each event is placed once into a temporary table; the archive is written from it,
-- then the table is emptied and refilled with the rest, its keys and index rebuilt
-- afterwards: the same reasons as for activities below, on fewer rows.
CREATE TEMPORARY TABLE event_placements AS
SELECT e.id, e.registration_id, e.event_type, e.body, e.status, e.attempts, e.created_at,
       e.processed_at, r.workspace_id,
       r.user_id IS NULL AND r.workspace_id IS NULL AS archived
FROM webhook_events e
JOIN webhook_registrations r ON r.id = e.registration_id;

INSERT INTO legacy_archive.webhook_events
    (id, registration_id, event_type, body, status, attempts, created_at, processed_at)
SELECT id, registration_id, event_type, body, status, attempts, created_at, processed_at
FROM event_placements
WHERE archived;

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_registration_id_fkey;
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_pkey;
DROP INDEX idx_webhook_events_registration;
TRUNCATE webhook_events;
ALTER TABLE webhook_events ALTER COLUMN workspace_id SET NOT NULL;

INSERT INTO webhook_events
    (id, registration_id, event_type, body, status, attempts, created_at, processed_at, workspace_id)
SELECT id, registration_id, event_type, body, status, attempts, created_at, processed_at, workspace_id
FROM event_placements
WHERE NOT archived;

-- Dropped explicitly, not ON COMMIT: the file must also run statement by statement
-- outside a transaction block (psql -f).
DROP TABLE event_placements;

ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_pkey PRIMARY KEY (id);

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

ALTER TABLE webhook_events
    ADD CONSTRAINT webhook_events_registration_id_fkey
    FOREIGN KEY (registration_id) REFERENCES webhook_registrations ON DELETE CASCADE;
CREATE INDEX idx_webhook_events_registration ON webhook_events (registration_id);

-- Activities -----------------------------------------------------------------------

-- Every activity gets a workspace and loses its payload. Rewriting the payloads is the
-- costly part (they are most of the table's bytes), so they are never rewritten: a new,
-- narrow public.activities is written from the old table, and the old table itself,
-- stripped of every column but id and payload, becomes
-- legacy_archive.activity_payloads. Dropping a column only marks it dropped (no
-- rewrite), so the archive keeps the old rows' bytes on disk until they are next
-- updated; nobody reads them. One transaction: a failure anywhere, renames included,
-- leaves activities as they were. (docs/performance.md has the timings.)
ALTER TABLE activities RENAME TO activities_before_008;
ALTER TABLE activities_before_008 RENAME CONSTRAINT activities_pkey TO activities_before_008_pkey;
ALTER SEQUENCE activities_id_seq RENAME TO activities_before_008_id_seq;
-- The old table keeps neither: they go now so that the new table can take the names.
ALTER TABLE activities_before_008 DROP CONSTRAINT activities_user_id_fkey;
DROP INDEX idx_activities_user;

-- The columns in the order 003 + 005 - payload left them. Keys, foreign keys and
-- indexes are built once the table is filled, one sorted pass or one join each.
CREATE TABLE activities (
    id           bigint GENERATED BY DEFAULT AS IDENTITY,
    user_id      bigint,
    action       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    workspace_id bigint
);

-- The new table has exactly the old one's owner and privileges (default privileges
-- may give it others), and so has its identity sequence, which continues where the
-- old one stood: an id is never handed out twice.
DO $$
DECLARE
    old_table oid := 'public.activities_before_008'::regclass;
    old_seq   oid := 'public.activities_before_008_id_seq'::regclass;
    new_seq   text := pg_get_serial_sequence('public.activities', 'id');
    pair      record;
    acl       record;
BEGIN
    EXECUTE format('ALTER TABLE public.activities OWNER TO %I',
                   (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = old_table));
    EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s', new_seq, old_seq::regclass);
    FOR pair IN
        SELECT old_table AS old_oid, 'public.activities'::regclass AS new_oid, 'TABLE' AS kind
        UNION ALL
        SELECT old_seq, new_seq::regclass, 'SEQUENCE'
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
END
$$;

-- The workspace an activity's payload names counts when "workspace_id" is
--   * a JSON number with an integral value in bigint range (30, 30.0 and 3e1 all
--     name 30; 30.5 and 1e400 name nothing), or
--   * a JSON string of ASCII digits only, leading zeros allowed ("007" names 7;
--     " 7", "+7", "-7", "7.0" and "" name nothing), whose value fits bigint,
-- and that workspace exists and the activity has no user or its user is a member
-- there. Otherwise the user's default workspace applies; with neither, NULL: the
-- activity goes to the archive, just below.
-- Every cast sits behind a CASE guard (WHERE/AND evaluation order is not
-- guaranteed), so no payload can raise: NULL, arrays, scalars and JSON null yield
-- no "workspace_id" at all, and the digit string is measured before it is cast.
INSERT INTO activities (id, user_id, action, created_at, workspace_id)
SELECT s.id, s.user_id, s.action, s.created_at,
       CASE
           WHEN w.id IS NOT NULL AND (s.user_id IS NULL OR m.user_id IS NOT NULL)
               THEN w.id
           ELSE u.default_workspace_id
       END
FROM (
    SELECT id, user_id, action, created_at,
           CASE jsonb_typeof(payload -> 'workspace_id')
               WHEN 'number' THEN (payload ->> 'workspace_id')::numeric
               WHEN 'string' THEN
                   CASE
                       WHEN payload ->> 'workspace_id' ~ '^[0-9]+$'
                        AND length(ltrim(payload ->> 'workspace_id', '0')) <= 19
                           THEN (payload ->> 'workspace_id')::numeric
                   END
           END AS named
    FROM activities_before_008
    -- A fence: without it the planner copies this CASE into every use of "named"
    -- below and parses each payload five times over.
    OFFSET 0
) s
LEFT JOIN workspaces w
    ON w.id = CASE
                  WHEN s.named = trunc(s.named) AND s.named BETWEEN 1 AND 9223372036854775807
                      THEN s.named::bigint
              END
LEFT JOIN workspace_members m ON m.workspace_id = w.id AND m.user_id = s.user_id
LEFT JOIN users u ON u.id = s.user_id;

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

ALTER TABLE activities ALTER COLUMN workspace_id SET NOT NULL;

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
-- runs; the new activities table has none at all until then.
ANALYZE webhook_registrations (workspace_id), webhook_events (workspace_id), activities;
