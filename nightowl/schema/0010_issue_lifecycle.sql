-- Issue lifecycle, threshold issues and the alert outbox (issue 10).
--
-- nightowl_issue_activity and nightowl_alert_outbox are the shared contract
-- (the dashboard reads the first, the alert dispatcher the second): their DDL
-- is fixed.  The drain writes both in the same transaction as the batch's rows,
-- its issue upserts and its ledger row, so a batch retried after a crash (the
-- ledger skips it) never counts or alerts twice.

CREATE TABLE nightowl_issue_activity (
    id bigserial PRIMARY KEY,
    issue_id bigint NOT NULL REFERENCES nightowl_issues (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,          -- 'agent' | 'cli' | 'dashboard'
    action text NOT NULL,         -- 'created' | 'reopened' | 'resolved' | 'ignored' | 'reopen' (manual)
    detail jsonb
);
CREATE INDEX nightowl_issue_activity_issue_id_idx ON nightowl_issue_activity (issue_id, at);

CREATE TABLE nightowl_alert_outbox (
    id bigserial PRIMARY KEY,
    event text NOT NULL,              -- 'issue.new' | 'issue.reopened' | 'performance.new'
    issue_id bigint REFERENCES nightowl_issues (id) ON DELETE SET NULL,
    environment text,
    payload jsonb NOT NULL,           -- the event body
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nightowl_alert_outbox_created_at_idx ON nightowl_alert_outbox (created_at);

-- resolved_at / reopened_at: when the status last became resolved / open again.
-- target: a performance issue's route, normalised SQL, job class, host, command
-- or task (NULL for exceptions).
-- prior_status: the status the drain found when it last upserted the row (NULL
-- when it inserted it).  INSERT .. ON CONFLICT DO UPDATE .. RETURNING shows only
-- the new row; this column is how the one upsert statement tells "reopened"
-- apart exactly, on the row version it locked.
ALTER TABLE nightowl_issues
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN reopened_at timestamptz,
    ADD COLUMN target text,
    ADD COLUMN prior_status text;

-- Duration thresholds for performance issues: one default per kind (target '')
-- and overrides per target.  Running drain workers reload this table every 30 s.
CREATE TABLE nightowl_thresholds (
    kind text NOT NULL CHECK (kind IN ('request', 'query', 'job', 'outgoing', 'command',
                                       'scheduled_task')),
    target text NOT NULL DEFAULT '',  -- '' = the kind's default
    duration_ms bigint NOT NULL CHECK (duration_ms > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, target)
);
