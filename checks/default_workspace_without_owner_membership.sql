-- name: default_workspace_without_owner_membership
-- from: 006
-- meaning: users without a membership with profile 'owner' in their own default workspace
SELECT u.id AS user_id, u.default_workspace_id, p.code AS profile_there
FROM public.users u
LEFT JOIN public.workspace_members m
       ON m.workspace_id = u.default_workspace_id AND m.user_id = u.id
LEFT JOIN public.profiles p ON p.id = m.profile_id
WHERE u.default_workspace_id IS NOT NULL
  AND p.code IS DISTINCT FROM 'owner'
ORDER BY u.id
