-- name: default_workspace_not_owned
-- from: 006
-- meaning: users whose default workspace is not one they own (the zero-count form of the playbook's "coerente" query)
SELECT u.id AS user_id, u.default_workspace_id, w.owner_id AS default_workspace_owner_id
FROM public.users u
LEFT JOIN public.workspaces w ON w.id = u.default_workspace_id
WHERE u.default_workspace_id IS NOT NULL
  AND w.owner_id IS DISTINCT FROM u.id
ORDER BY u.id
