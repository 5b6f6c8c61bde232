-- name: credentials_without_workspace
-- from: 007
-- meaning: credentials whose workspace_id is NULL; 007 puts each in its user's default workspace
SELECT c.id AS credential_id, c.user_id, c.name, c.provider
FROM public.credentials c
WHERE c.workspace_id IS NULL
ORDER BY c.id
