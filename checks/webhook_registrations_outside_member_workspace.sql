-- name: webhook_registrations_outside_member_workspace
-- from: 008
-- meaning: webhook registrations with a user who is not a member of their workspace (a cross-tenant leak)
-- covers: tenant_member_workspace[webhook_registrations]
SELECT r.id AS registration_id, r.user_id, r.workspace_id, r.target_url
FROM public.webhook_registrations r
WHERE r.user_id IS NOT NULL
  AND NOT EXISTS (
      SELECT FROM public.workspace_members m
      WHERE m.workspace_id = r.workspace_id AND m.user_id = r.user_id
  )
ORDER BY r.id
