-- name: webhook_registrations_without_workspace
-- from: 008
-- meaning: webhook registrations whose workspace_id is NULL; 008 places or archives every one
SELECT r.id AS registration_id, r.user_id, r.target_url
FROM public.webhook_registrations r
WHERE r.workspace_id IS NULL
ORDER BY r.id
