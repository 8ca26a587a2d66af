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
-- the bucket holding the sample of rank max(1, ceil(q * n)), as percentile_disc.
-- A binary search over bucket indexes: the samples in buckets >= i are the
-- digit sum (base 10^12) of trunc(s / 10^(12 i)), i.e. that number mod
-- 10^12 - 1.  Each step keeps only the half of s that holds the answer, so
-- the work is ~2 passes over the digits instead of one loop turn per bucket
-- (measured ~10x faster than walking the fields).  min_us / max_us (the
-- rows' merged min and max, optional) narrow the search; they are checked
-- against s, so a wrong hint costs time, never a wrong answer.
CREATE FUNCTION nightowl_sketch_quantile(s numeric, q float8, min_us bigint, max_us bigint)
RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    g constant float8 := 1.01::float8 / 0.99::float8;
    top constant integer := 1281;   -- the highest bucket index (KMAX + 1)
    lo integer := 0;
    hi integer := 1281;
    n bigint;
    m bigint;
    mid integer;
    k integer;
    c bigint;
    t numeric;
BEGIN
    IF s IS NULL OR q IS NULL OR s <= 0 THEN
        RETURN NULL;
    END IF;
    s := trunc(s);
    IF min_us IS NOT NULL AND min_us >= 1 THEN
        lo := greatest(0, least(top, ceil(ln(min_us::float8) / ln(g))::integer + 1) - 1);
    END IF;
    IF max_us IS NOT NULL THEN
        hi := CASE WHEN max_us < 1 THEN 1
                   ELSE least(top, ceil(ln(max_us::float8) / ln(g))::integer + 2) END;
    END IF;
    IF hi < top AND trunc(s * ('1e-' || (12 * (hi + 1)))::numeric) <> 0 THEN
        hi := top;                      -- samples above the hint
    END IF;
    IF lo > 0 THEN
        t := trunc(s * ('1e-' || (12 * lo))::numeric);
        IF t * ('1e' || (12 * lo))::numeric = s THEN
            s := t;                     -- rebased: field 0 of s is bucket lo
        ELSE
            lo := 0;                    -- samples below the hint
        END IF;
    END IF;
    IF hi < lo THEN
        hi := lo;
    END IF;
    -- a shift by 10^12 does not change the value mod 10^12 - 1
    n := (s % 999999999999)::bigint;
    IF n <= 0 THEN
        RETURN NULL;
    END IF;
    q := least(1.0, greatest(0.0, q));
    -- rank from the top: the m-th highest sample
    m := n - greatest(1, ceil(q * n::float8)::bigint) + 1;
    -- invariant: the answer is in [lo, hi], s holds buckets lo.. (rebased),
    -- and m is the rank from the top within s
    WHILE lo < hi LOOP
        mid := (lo + hi + 1) / 2;
        k := 12 * (mid - lo);
        t := trunc(s * ('1e-' || k)::numeric);
        c := (t % 999999999999)::bigint;
        IF c >= m THEN
            s := t;
            lo := mid;
        ELSE
            s := s - t * ('1e' || k)::numeric;
            m := m - c;
            hi := mid - 1;
        END IF;
    END LOOP;
    IF lo = 0 THEN
        RETURN 0;
    END IF;
    RETURN 2.0 * power(g, lo - 1) / (g + 1.0);
END
$$;

CREATE FUNCTION nightowl_sketch_quantile(s numeric, q float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT nightowl_sketch_quantile(s, q, NULL::bigint, NULL::bigint) $$;
