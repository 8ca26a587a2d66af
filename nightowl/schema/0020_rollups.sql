-- Rollups (issue 11): per-minute, per-hour and per-day aggregates written by
-- the drain in the same transaction as the raw rows and the ledger, so a
-- retried batch is never counted twice.  Durations are microseconds.
--
-- sketch: a DDSketch-style log-bucketed quantile sketch (relative accuracy
-- 1 %) encoded as one numeric: bucket i is the 12-digit field i, so merging
-- two sketches is numeric addition and the aggregate nightowl_sketch_merge
-- (or plain sum()) merges any set of rows at C speed.  See
-- nightowl/rollups/sketch.py for the encoding; nightowl_sketch_quantile below
-- is the same algorithm as sketch.quantile and returns the same float.

CREATE TABLE nightowl_rollups_minute (
    bucket timestamptz NOT NULL,
    kind text NOT NULL,
    environment text NOT NULL,
    group_key text NOT NULL,
    label text NOT NULL DEFAULT '',
    attrs jsonb,
    count bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    sum_us double precision NOT NULL DEFAULT 0,
    min_us bigint,
    max_us bigint,
    sketch numeric,
    PRIMARY KEY (kind, bucket, environment, group_key)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX nightowl_rollups_minute_group_idx ON nightowl_rollups_minute (kind, group_key, bucket);

CREATE TABLE nightowl_rollups_hour (LIKE nightowl_rollups_minute INCLUDING ALL);
CREATE TABLE nightowl_rollups_day (LIKE nightowl_rollups_minute INCLUDING ALL);

-- merge two sketches (NULL is the empty sketch): the upserts' ON CONFLICT
CREATE FUNCTION nightowl_sketch_add(a numeric, b numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT COALESCE(a + b, a, b) $$;

-- merge any number of sketches: SELECT nightowl_sketch_merge(sketch) ... GROUP BY
CREATE AGGREGATE nightowl_sketch_merge(numeric) (
    SFUNC = numeric_add,
    STYPE = numeric,
    COMBINEFUNC = numeric_add,
    PARALLEL = SAFE
);

-- samples counted in a sketch (the digit sum in base 10^12)
CREATE FUNCTION nightowl_sketch_count(s numeric) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT (s % 999999999999)::bigint $$;

-- estimated q-quantile of a sketch, in microseconds (NULL when empty):
-- the bucket holding the sample of rank max(1, ceil(q * n)), as percentile_disc
CREATE FUNCTION nightowl_sketch_quantile(s numeric, q float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    g constant float8 := 1.01::float8 / 0.99::float8;
    n bigint;
    r bigint;
    t text;
    nf integer;
    pos integer;
    c bigint;
    acc bigint := 0;
    low integer;
BEGIN
    IF s <= 0 THEN
        RETURN NULL;
    END IF;
    n := (s % 999999999999)::bigint;
    IF n <= 0 THEN
        RETURN NULL;
    END IF;
    q := least(1.0, greatest(0.0, q));
    r := greatest(1, ceil(q * n::float8)::bigint);
    -- the digits without the zero fields below the lowest bucket; substr on
    -- text walks characters from the start, so read near the start only:
    -- high quantiles from the top of t, low ones from the top of reverse(t)
    t := trunc(s)::text;
    low := (length(t) - length(rtrim(t, '0'))) / 12;
    t := left(t, length(t) - low * 12);
    nf := (length(t) + 11) / 12;
    t := lpad(t, nf * 12, '0');
    IF q >= 0.5 THEN
        pos := 1;
        FOR i IN REVERSE nf - 1 .. 0 LOOP
            c := substr(t, pos, 12)::bigint;
            pos := pos + 12;
            IF c > 0 THEN
                IF n - acc - c < r THEN
                    IF i + low = 0 THEN RETURN 0; END IF;
                    RETURN 2.0 * power(g, i + low - 1) / (g + 1.0);
                END IF;
                acc := acc + c;
            END IF;
        END LOOP;
    ELSE
        t := reverse(t);
        pos := 1;
        FOR i IN 0 .. nf - 1 LOOP
            c := reverse(substr(t, pos, 12))::bigint;
            pos := pos + 12;
            IF c > 0 THEN
                acc := acc + c;
                IF acc >= r THEN
                    IF i + low = 0 THEN RETURN 0; END IF;
                    RETURN 2.0 * power(g, i + low - 1) / (g + 1.0);
                END IF;
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;
