-- 007: credentials belong to their user's default workspace.

-- Every credential gets a workspace, so every row is rewritten anyway: each is placed
-- once into a temporary table, then the table is emptied and refilled, its keys and
-- index rebuilt in one pass each, instead of an UPDATE that writes a new version of
-- every row and maintains each index and foreign key row by row (as 008 does for
-- webhook events and activities). A value set since 005 was put there on purpose and
-- is kept.
CREATE TEMPORARY TABLE credential_placements AS
SELECT c.id, c.user_id, c.name, c.provider, c.secret, c.created_at, c.updated_at,
       coalesce(c.workspace_id, u.default_workspace_id) AS workspace_id
FROM credentials c
JOIN users u ON u.id = c.user_id;

ALTER TABLE credentials DROP CONSTRAINT credentials_workspace_id_fkey;
ALTER TABLE credentials DROP CONSTRAINT credentials_user_id_fkey;
ALTER TABLE credentials DROP CONSTRAINT credentials_pkey;
DROP INDEX idx_credentials_user;
TRUNCATE credentials;
ALTER TABLE credentials ALTER COLUMN workspace_id SET NOT NULL;

INSERT INTO credentials (id, user_id, name, provider, secret, created_at, updated_at, workspace_id)
SELECT id, user_id, name, provider, secret, created_at, updated_at, workspace_id
FROM credential_placements;

-- Dropped explicitly, not ON COMMIT: the file must also run outside a transaction block.
DROP TABLE credential_placements;

ALTER TABLE credentials ADD CONSTRAINT credentials_pkey PRIMARY KEY (id);
ALTER TABLE credentials
    ADD CONSTRAINT credentials_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE;
ALTER TABLE credentials
    ADD CONSTRAINT credentials_workspace_id_fkey
    FOREIGN KEY (workspace_id) REFERENCES workspaces ON DELETE CASCADE;

-- An unindexed FK behind ON DELETE CASCADE makes every user deletion scan the table.
CREATE INDEX idx_credentials_user ON credentials (user_id);
-- "Credentials of a workspace"; also serves the cascade from workspaces.
CREATE INDEX idx_credentials_workspace ON credentials (workspace_id);

-- Fresh statistics, so the planner picks the new index as soon as the application runs.
ANALYZE credentials (workspace_id);
