-- name: users_without_default_workspace
-- from: 006
-- meaning: users whose default_workspace_id is NULL; 006 gives every user a default workspace
SELECT u.id AS user_id, u.email, u.created_at
FROM public.users u
WHERE u.default_workspace_id IS NULL
ORDER BY u.id
