-- name: credentials_outside_member_workspace
-- from: 007
-- meaning: credentials in a workspace their user is not a member of (a cross-tenant leak)
-- covers: tenant_member_workspace[credentials]
SELECT c.id AS credential_id, c.user_id, c.workspace_id, c.name, c.provider
FROM public.credentials c
WHERE NOT EXISTS (
    SELECT FROM public.workspace_members m
    WHERE m.workspace_id = c.workspace_id AND m.user_id = c.user_id
)
ORDER BY c.id
