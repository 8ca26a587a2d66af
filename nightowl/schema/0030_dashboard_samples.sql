-- Dashboard (issue 13): the "slowest recent" rows of one group are the
-- slowest of that group's newest rows in the range, read newest first through
-- an index that leads with the raw column the rollup group key comes from and
-- ends with created_at, so the scan stops after a fixed number of rows.
-- Requests, queries, commands and scheduled tasks group by group_hash
-- (indexed in 0001); jobs by class, outgoing requests by host.  Cache events
-- (by store and event type) get no index: they are the busiest table after
-- queries and every B-tree costs the drain's COPY; their samples come from the
-- last hour of the range only (rawreads.SAMPLE_SPAN), through the BRIN index.
-- Created on the partitioned parents: every daily child gets its own.
CREATE INDEX IF NOT EXISTS nightowl_jobs_job_class_created_at_idx
    ON nightowl_jobs (job_class, created_at);
CREATE INDEX IF NOT EXISTS nightowl_outgoing_requests_host_created_at_idx
    ON nightowl_outgoing_requests (host, created_at);
