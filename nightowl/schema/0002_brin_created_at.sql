-- Event-time lookups within a day partition: a BRIN index instead of a B-tree.
-- Rows arrive in (nearly) time order, so BRIN answers range scans about as well
-- at a fraction of the insert cost: one B-tree fewer per row on the hot COPY path
-- (the PK still carries (id, created_at) for exact lookups).

DROP INDEX IF EXISTS nightowl_requests_created_at_idx;
CREATE INDEX nightowl_requests_created_at_brin ON nightowl_requests USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_queries_created_at_idx;
CREATE INDEX nightowl_queries_created_at_brin ON nightowl_queries USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_exceptions_created_at_idx;
CREATE INDEX nightowl_exceptions_created_at_brin ON nightowl_exceptions USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_commands_created_at_idx;
CREATE INDEX nightowl_commands_created_at_brin ON nightowl_commands USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_jobs_created_at_idx;
CREATE INDEX nightowl_jobs_created_at_brin ON nightowl_jobs USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_cache_events_created_at_idx;
CREATE INDEX nightowl_cache_events_created_at_brin ON nightowl_cache_events USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_mail_created_at_idx;
CREATE INDEX nightowl_mail_created_at_brin ON nightowl_mail USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_notifications_created_at_idx;
CREATE INDEX nightowl_notifications_created_at_brin ON nightowl_notifications USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_outgoing_requests_created_at_idx;
CREATE INDEX nightowl_outgoing_requests_created_at_brin ON nightowl_outgoing_requests USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_scheduled_tasks_created_at_idx;
CREATE INDEX nightowl_scheduled_tasks_created_at_brin ON nightowl_scheduled_tasks USING brin (created_at) WITH (pages_per_range = 32);
DROP INDEX IF EXISTS nightowl_logs_created_at_idx;
CREATE INDEX nightowl_logs_created_at_brin ON nightowl_logs USING brin (created_at) WITH (pages_per_range = 32);
