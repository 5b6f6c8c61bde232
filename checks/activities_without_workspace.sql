-- name: activities_without_workspace
-- from: 008
-- meaning: activities whose workspace_id is NULL; 008 places each one or moves it to legacy_archive
SELECT a.id AS activity_id, a.user_id, a.action, a.created_at
FROM public.activities a
WHERE a.workspace_id IS NULL
ORDER BY a.id
