-- 007: credentials belong to their user's default workspace.

-- A bulk UPDATE of every row checks a FK once per row and inserts into every index
-- once per row (in random order for user_id); dropping both and re-adding them after
-- the backfill does the same work in one join and one sorted index build.
ALTER TABLE credentials DROP CONSTRAINT credentials_workspace_id_fkey;
DROP INDEX idx_credentials_user;

-- Only rows still NULL: 005 left every legacy row NULL, and a value set since then
-- was put there on purpose.
UPDATE credentials c
SET workspace_id = u.default_workspace_id
FROM users u
WHERE u.id = c.user_id
  AND c.workspace_id IS NULL;

CREATE INDEX idx_credentials_user ON credentials (user_id);

ALTER TABLE credentials ALTER COLUMN workspace_id SET NOT NULL;

ALTER TABLE credentials
    ADD CONSTRAINT credentials_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces ON DELETE CASCADE;

-- "Credentials of a workspace"; also serves the cascade from workspaces.
CREATE INDEX idx_credentials_workspace ON credentials (workspace_id);

-- Fresh statistics, so the planner picks the new index as soon as the application runs.
ANALYZE credentials;
