-- name: webhook_events_without_workspace
-- from: 008
-- meaning: webhook events whose workspace_id is NULL; 008 gives each its registration's workspace
SELECT e.id AS event_id, e.registration_id, e.event_type, e.status
FROM public.webhook_events e
WHERE e.workspace_id IS NULL
ORDER BY e.id
