-- 005: scope business data by workspace. The columns start NULL; 007 and 008 fill
-- them and make them NOT NULL.
--
-- ON DELETE CASCADE: data scoped to a workspace has no meaning without it, the same
-- way 002 deletes a workspace together with its owner.
-- The constraints are named so that 007 and 008 can drop and re-add them around
-- their bulk backfills.

ALTER TABLE credentials
    ADD COLUMN workspace_id bigint
        CONSTRAINT credentials_workspace_id_fkey REFERENCES workspaces ON DELETE CASCADE;

ALTER TABLE webhook_registrations
    ADD COLUMN workspace_id bigint
        CONSTRAINT webhook_registrations_workspace_id_fkey REFERENCES workspaces ON DELETE CASCADE;

ALTER TABLE webhook_events
    ADD COLUMN workspace_id bigint
        CONSTRAINT webhook_events_workspace_id_fkey REFERENCES workspaces ON DELETE CASCADE;

ALTER TABLE activities
    ADD COLUMN workspace_id bigint
        CONSTRAINT activities_workspace_id_fkey REFERENCES workspaces ON DELETE CASCADE;

-- Keeps whatever 008 takes out of public. Default privileges are set IN SCHEMA public
-- only, so the application role gets nothing here.
CREATE SCHEMA legacy_archive;
REVOKE ALL ON SCHEMA legacy_archive FROM PUBLIC;
