-- name: webhook_event_workspace_mismatch
-- from: 008
-- meaning: webhook events whose workspace differs from their registration's
-- covers: tenant_reference_workspace[webhook_events]
SELECT e.id AS event_id, e.registration_id, e.workspace_id AS event_workspace_id,
       r.workspace_id AS registration_workspace_id
FROM public.webhook_events e
JOIN public.webhook_registrations r ON r.id = e.registration_id
WHERE e.workspace_id IS DISTINCT FROM r.workspace_id
ORDER BY e.id
