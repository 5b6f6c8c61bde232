-- name: activities_outside_member_workspace
-- from: 008
-- meaning: activities with a user who is not a member of their workspace (a cross-tenant leak)
-- covers: tenant_member_workspace[activities]
SELECT a.id AS activity_id, a.user_id, a.workspace_id, a.action, a.created_at
FROM public.activities a
WHERE a.user_id IS NOT NULL
  AND NOT EXISTS (
      SELECT FROM public.workspace_members m
      WHERE m.workspace_id = a.workspace_id AND m.user_id = a.user_id
  )
ORDER BY a.id
