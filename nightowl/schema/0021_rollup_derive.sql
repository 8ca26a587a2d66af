-- Rollups (issue 11), derived tiers: the drain's batch transaction writes only
-- the minute rows, plus one row here per (environment, UTC hour) it touched.
-- The deriver (nightowl/rollups/derive.py, every ~60 s in the agent) replaces
-- each pending hour's hour row, and its day's day row, by the merge of the
-- minutes, then deletes the pending rows it saw, all in one snapshot.  Readers
-- (nightowl/rollups/query.py) read a pending hour from its minutes, so answers
-- stay exact and current while the hour and day rows lag by up to a minute.
-- Insert-only: writers never contend on a row of this table.
CREATE TABLE nightowl_rollups_pending (
    id bigserial PRIMARY KEY,
    environment text NOT NULL,
    hour timestamptz NOT NULL
);
CREATE INDEX nightowl_rollups_pending_hour_idx ON nightowl_rollups_pending (hour);
