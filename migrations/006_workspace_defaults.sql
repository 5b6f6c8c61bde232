-- 006: every user gets a default workspace they own, with an owner membership there.
-- Set-based throughout; the FK is added after the backfill so it is validated by one
-- join instead of one trigger call per updated row.

ALTER TABLE users ADD COLUMN default_workspace_id bigint;

-- Users owning no workspace get one personal workspace. Its created_at is the
-- user's own: deterministic across runs, and the workspace stands for the scope the
-- user implicitly had since signing up. Ordered so ids follow user ids.
INSERT INTO workspaces (owner_id, name, created_at)
SELECT u.id, u.name || '''s workspace', u.created_at
FROM users u
WHERE NOT EXISTS (SELECT FROM workspaces w WHERE w.owner_id = u.id)
ORDER BY u.id;

-- Every owner holds the owner profile in each workspace they own: another profile is
-- raised to owner, a missing row is added (dated with the workspace). Rows that are
-- already right are not touched, not even locked (INSERT ... ON CONFLICT DO UPDATE
-- would lock every one of them, and WAL-log each lock).
UPDATE workspace_members m
SET profile_id = p.id
FROM workspaces w, profiles p
WHERE p.code = 'owner'
  AND m.workspace_id = w.id
  AND m.user_id = w.owner_id
  AND m.profile_id <> p.id;

INSERT INTO workspace_members (workspace_id, user_id, profile_id, created_at)
SELECT w.id, w.owner_id, p.id, w.created_at
FROM workspaces w
CROSS JOIN profiles p
WHERE p.code = 'owner'
  AND NOT EXISTS (
      SELECT FROM workspace_members m
      WHERE m.workspace_id = w.id
        AND m.user_id = w.owner_id
  );

-- Default = oldest owned workspace, by created_at then id.
UPDATE users u
SET default_workspace_id = oldest.id
FROM (
    SELECT DISTINCT ON (owner_id) owner_id, id
    FROM workspaces
    ORDER BY owner_id, created_at, id
) oldest
WHERE oldest.owner_id = u.id;

-- NO ACTION (not SET NULL): a user's default cannot silently vanish; the application
-- must repoint it before deleting that workspace. Deleting the user itself still works,
-- since the user row is gone by the time the check runs.
ALTER TABLE users
    ADD CONSTRAINT users_default_workspace_id_fkey
    FOREIGN KEY (default_workspace_id) REFERENCES workspaces;

-- Serves the FK check when a workspace is deleted.
CREATE INDEX idx_users_default_workspace ON users (default_workspace_id);
