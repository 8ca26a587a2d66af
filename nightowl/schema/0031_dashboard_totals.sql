-- Dashboard (issue 13): a kind's series over 7 or 30 days merges every
-- group's hour (day) rows: 168 hours x 200 query groups = 34,000 sketches,
-- ~0.6 s a page.  This table keeps, per (tier, kind, bucket), the merge over
-- every group, per environment and over all environments (all_envs, with
-- environment ''), so that series reads one row per bucket.
--
-- Filled by the dashboard when it reads a bucket that is not here yet
-- (nightowl/dashboard/totals.py), holding the deriver's lock and the rollup
-- lock shared, so no derive or rebuild runs meanwhile; emptied for a bucket
-- by the triggers below whenever that bucket's hour (day) rows change (the
-- deriver's replace, a rebuild, tier retention), in the same transaction.
-- A bucket with no rows is kept as an all_envs row with count 0.
CREATE TABLE nightowl_dashboard_totals (
    tier text NOT NULL,
    kind text NOT NULL,
    bucket timestamptz NOT NULL,
    all_envs boolean NOT NULL,
    environment text NOT NULL,
    count bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    min_us bigint,
    max_us bigint,
    sketch numeric,
    PRIMARY KEY (tier, kind, bucket, all_envs, environment)
);

CREATE FUNCTION nightowl_dashboard_totals_forget() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM nightowl_dashboard_totals t
    USING (SELECT DISTINCT kind, bucket FROM changed) c
    WHERE t.tier = TG_ARGV[0] AND t.kind = c.kind AND t.bucket = c.bucket;
    RETURN NULL;
END
$$;

CREATE TRIGGER nightowl_dashboard_totals_hour_insert AFTER INSERT ON nightowl_rollups_hour
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION nightowl_dashboard_totals_forget('hour');
CREATE TRIGGER nightowl_dashboard_totals_hour_update AFTER UPDATE ON nightowl_rollups_hour
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION nightowl_dashboard_totals_forget('hour');
CREATE TRIGGER nightowl_dashboard_totals_hour_delete AFTER DELETE ON nightowl_rollups_hour
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION nightowl_dashboard_totals_forget('hour');
CREATE TRIGGER nightowl_dashboard_totals_day_insert AFTER INSERT ON nightowl_rollups_day
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION nightowl_dashboard_totals_forget('day');
CREATE TRIGGER nightowl_dashboard_totals_day_update AFTER UPDATE ON nightowl_rollups_day
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION nightowl_dashboard_totals_forget('day');
CREATE TRIGGER nightowl_dashboard_totals_day_delete AFTER DELETE ON nightowl_rollups_day
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION nightowl_dashboard_totals_forget('day');

-- TRUNCATE fires no DELETE trigger: forget the whole tier
CREATE FUNCTION nightowl_dashboard_totals_forget_tier() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM nightowl_dashboard_totals WHERE tier = TG_ARGV[0];
    RETURN NULL;
END
$$;
CREATE TRIGGER nightowl_dashboard_totals_hour_truncate AFTER TRUNCATE ON nightowl_rollups_hour
    FOR EACH STATEMENT EXECUTE FUNCTION nightowl_dashboard_totals_forget_tier('hour');
CREATE TRIGGER nightowl_dashboard_totals_day_truncate AFTER TRUNCATE ON nightowl_rollups_day
    FOR EACH STATEMENT EXECUTE FUNCTION nightowl_dashboard_totals_forget_tier('day');
