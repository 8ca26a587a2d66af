-- Rollups (issue 11), partial hours: the deriver may write the current hour's
-- hour rows from its settled minutes only, so that a reader merges one hour row
-- plus the few live minutes after it instead of up to 60 minute rows.
--
-- A pending row now says which minutes of its hour the hour rows may lack:
--   derived = false (the drain's, one per environment and hour a batch touched):
--     the batch wrote minutes >= minute (NULL, as 0021 wrote them: the whole hour);
--   derived = true (the deriver's marker, at most one per environment and hour):
--     the hour rows hold exactly the minutes [hour, minute), the deriver's
--     cut-off; the minutes from there on are read live.
-- A reader (nightowl/rollups/plan.py) uses an hour row with a marker only while
-- no drain row of that hour has minute < the marker; anything else reads the
-- hour from its minutes, as before.  Readers that treat every pending row as
-- "read this hour from its minutes" (0021's rule) stay exact unchanged.
ALTER TABLE nightowl_rollups_pending
    ADD COLUMN minute timestamptz,
    ADD COLUMN derived boolean NOT NULL DEFAULT false;

-- The span tier: per group, the merge of the last SPAN_HOURS (23) whole hours
-- [bucket, until), kept by the deriver in the transaction that derives any of
-- those hours (nightowl/rollups/span.py).  A 24 h read merges it, one more
-- hour row, the current hour's row and a few live minutes.  Every row of the
-- table has the same window; a reader uses it only while none of its hours is
-- pending.
CREATE TABLE nightowl_rollups_span (LIKE nightowl_rollups_hour INCLUDING ALL);
ALTER TABLE nightowl_rollups_span ADD COLUMN until timestamptz NOT NULL;
