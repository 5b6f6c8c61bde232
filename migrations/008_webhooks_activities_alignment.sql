-- 008: every webhook registration, webhook event and activity belongs to a workspace;
-- what cannot be placed moves to legacy_archive, and activities.payload goes there too.
-- Nothing is deleted from public before a copy of it is in legacy_archive.

-- The FKs from 005 are dropped around the bulk backfills (one trigger call per updated
-- row otherwise) and re-added at the end, validated by one join each. For the same
-- reason the big tables' user/registration indexes are rebuilt after their UPDATE
-- rather than maintained row by row, in random order, during it.
ALTER TABLE webhook_registrations DROP CONSTRAINT webhook_registrations_workspace_id_fkey;
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_workspace_id_fkey;
ALTER TABLE activities DROP CONSTRAINT activities_workspace_id_fkey;

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

-- Payloads of the activities that stay in public, once activities.payload is dropped.
CREATE TABLE legacy_archive.activity_payloads (
    activity_id bigint PRIMARY KEY,
    payload     jsonb NOT NULL
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
-- itself, move to the archive. Events first, so the cascade has nothing left to do.
WITH moved AS (
    DELETE FROM webhook_events e
    USING webhook_registrations r
    WHERE r.id = e.registration_id
      AND r.user_id IS NULL
      AND r.workspace_id IS NULL
    RETURNING e.id, e.registration_id, e.event_type, e.body, e.status, e.attempts,
              e.created_at, e.processed_at
)
INSERT INTO legacy_archive.webhook_events
    (id, registration_id, event_type, body, status, attempts, created_at, processed_at)
SELECT id, registration_id, event_type, body, status, attempts, created_at, processed_at
FROM moved;

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

-- An event belongs where its registration does. (The cascades above needed the
-- registration index; the backfill does not.)
DROP INDEX idx_webhook_events_registration;

UPDATE webhook_events e
SET workspace_id = r.workspace_id
FROM webhook_registrations r
WHERE r.id = e.registration_id
  AND e.workspace_id IS DISTINCT FROM r.workspace_id;

CREATE INDEX idx_webhook_events_registration ON webhook_events (registration_id);

-- Activities -----------------------------------------------------------------------

-- The workspace an activity's payload names counts when "workspace_id" is
--   * a JSON number with an integral value in bigint range (30, 30.0 and 3e1 all
--     name 30; 30.5 and 1e400 name nothing), or
--   * a JSON string of ASCII digits only, leading zeros allowed ("007" names 7;
--     " 7", "+7", "-7", "7.0" and "" name nothing), whose value fits bigint,
-- and that workspace exists and the activity has no user or its user is a member
-- there. Otherwise the user's default workspace applies.
-- Every cast sits behind a CASE guard (WHERE/AND evaluation order is not
-- guaranteed), so no payload can raise: NULL, arrays, scalars and JSON null yield
-- no "workspace_id" at all, and the digit string is measured before it is cast.
DROP INDEX idx_activities_user;

UPDATE activities a
SET workspace_id = resolved.workspace_id
FROM (
    SELECT s.id,
           CASE
               WHEN w.id IS NOT NULL AND (s.user_id IS NULL OR m.user_id IS NOT NULL)
                   THEN w.id
               ELSE u.default_workspace_id
           END AS workspace_id
    FROM (
        SELECT id,
               user_id,
               CASE jsonb_typeof(payload -> 'workspace_id')
                   WHEN 'number' THEN (payload ->> 'workspace_id')::numeric
                   WHEN 'string' THEN
                       CASE
                           WHEN payload ->> 'workspace_id' ~ '^[0-9]+$'
                            AND length(ltrim(payload ->> 'workspace_id', '0')) <= 19
                               THEN (payload ->> 'workspace_id')::numeric
                       END
               END AS named
        FROM activities
        WHERE workspace_id IS NULL
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
    LEFT JOIN users u ON u.id = s.user_id
) resolved
WHERE resolved.id = a.id
  AND resolved.workspace_id IS NOT NULL;

-- An activity with neither a named workspace nor a user's default moves, payload
-- included, to the archive.
WITH moved AS (
    DELETE FROM activities
    WHERE workspace_id IS NULL
    RETURNING id, user_id, action, payload, created_at
)
INSERT INTO legacy_archive.activities (id, user_id, action, payload, created_at)
SELECT id, user_id, action, payload, created_at
FROM moved;

-- The payloads of the activities that stay, JSON null included (it is not SQL NULL).
INSERT INTO legacy_archive.activity_payloads (activity_id, payload)
SELECT id, payload
FROM activities
WHERE payload IS NOT NULL;

ALTER TABLE activities DROP COLUMN payload;

CREATE INDEX idx_activities_user ON activities (user_id);

-- Constraints and indexes -----------------------------------------------------------

ALTER TABLE webhook_registrations ALTER COLUMN workspace_id SET NOT NULL;
ALTER TABLE webhook_events ALTER COLUMN workspace_id SET NOT NULL;
ALTER TABLE activities ALTER COLUMN workspace_id SET NOT NULL;

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

-- Fresh statistics, so the planner picks the new indexes as soon as the application runs.
ANALYZE webhook_registrations, webhook_events, activities;
