-- PROVISIONAL (branch i13, the dashboard): the issue activity table that
-- 0010_issue_lifecycle.sql (branch i10a) owns, copied verbatim from
-- CONTRACTS.md but IF NOT EXISTS, so that the dashboard's resolve / ignore /
-- reopen buttons have somewhere to record who did what.  Dropped at merge.

CREATE TABLE IF NOT EXISTS nightowl_issue_activity (
    id bigserial PRIMARY KEY,
    issue_id bigint NOT NULL REFERENCES nightowl_issues (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,          -- 'agent' | 'cli' | 'dashboard'
    action text NOT NULL,         -- 'created' | 'reopened' | 'resolved' | 'ignored' | 'reopen' (manual)
    detail jsonb
);
CREATE INDEX IF NOT EXISTS nightowl_issue_activity_issue_id_idx ON nightowl_issue_activity (issue_id, at);
