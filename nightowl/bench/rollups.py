"""
``nightowl bench rollups [--payloads 20000] [--workers 2] [--routes 1000]``

The rollup figures of issue 11, in one run:

1. drain cost: the real drain (supervisor + worker processes, as ``bench
   drain``) over the same fixture-mix payloads, rollups on and off
   (NIGHTOWL_ROLLUPS=0), ``--rounds`` runs of each interleaved, each into a
   fresh database; prints every run's rows/s and the ratio of the best runs
   (target >= 0.8); ``--profile DIR`` runs the workers under cProfile;
2. accuracy (after deriving the hour and day tiers from the drained minutes,
   as the agent does every minute; the derivation is timed and printed):
   p50/p95/p99 from merged minute, hour and day rollups against exact
   ``percentile_disc`` over the raw rows, per group, for the drained bench
   payloads and for a heavy-tailed mix (lognormal and Pareto durations);
   prints the worst relative error (target <= 2 %);
3. read speed: rollup tables seeded directly with ``--routes`` routes x 26 h
   of minute rows plus their hour rows; ``nightowl.rollups.query.top`` for the
   last 24 h (the span, the current hour's row and its live minutes, as the
   deriver leaves them), median of 5 (target <= 100 ms): with
   p50/p95/p99 of every route, with the default limit 20 (p95 of every route,
   p50/p99 of the top 20), and from minute rows only, for comparison.

The last line printed is one JSON object with every figure.
"""

import json
import random
import statistics
import time
import uuid

from nightowl.bench import drain as drain_bench
from nightowl.bench import scratch as scratch_db


def configure(parser):
    parser.add_argument("--payloads", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--admin-dsn", default=scratch_db.DEFAULT_ADMIN_DSN)
    parser.add_argument("--rounds", type=int, default=2,
                        help="drain runs of each mode, interleaved; the best of each is compared")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="run the drain workers under cProfile: DIR/<on|off>-<round>/worker-N.prof")


def _drain(args, payloads, scratch, say, tmp):
    """Drain ``payloads`` with rollups on and off, ``--rounds`` times each,
    interleaved (on, off, on, off, ...), every run into a fresh database:
    the best run of each mode gives the ratio, so a warm-up or a burst of
    load on a shared box penalises neither mode systematically."""
    import os

    from twisted.internet import defer, reactor
    jobs = []
    for r in range(args.rounds):
        for label, env in (("rollups on", {}), ("rollups off", {"NIGHTOWL_ROLLUPS": "0"})):
            path = os.path.join(tmp, "buffer-{}-{}.sqlite".format(label.replace(" ", "-"), r))
            drain_bench.fill_buffer(path, payloads)
            jobs.append((label, r, env, path, scratch()))
    results = []
    failed = []

    @defer.inlineCallbacks
    def drive():
        try:
            for label, r, env, path, dsn in jobs:
                elapsed, metrics = yield drain_bench.drain_once(
                    reactor, path, dsn, len(payloads), args.workers, args.batch_size, True,
                    extra_env=env, profile=args.profile and os.path.join(
                        args.profile, "{}-{}".format(label.split()[-1], r)))
                rows = sum(int(m.get("rows", 0)) for m in metrics.values())
                results.append((label, r, elapsed, rows, dsn))
        except Exception as e:
            failed.append(e)
        finally:
            reactor.stop()
    reactor.callWhenRunning(drive)
    drain_bench._quiet_twisted_logs()
    reactor.run()
    if failed:
        raise RuntimeError("drain run failed: {!r}".format(failed[0]))
    best = {}
    for label, r, elapsed, rows, dsn in results:
        say("drain, {} (round {}): {} rows in {:.2f} s = {:,.0f} rows/s".format(
            label, r + 1, rows, elapsed, rows / elapsed))
        if label not in best or rows / elapsed > best[label][0]:
            best[label] = (rows / elapsed, dsn)
    return best["rollups on"][0], best["rollups off"][0], best["rollups on"][1]


ACCURACY = """
WITH raw AS (
    SELECT {group} AS g, percentile_disc(%(q)s) WITHIN GROUP (ORDER BY duration) AS exact
    FROM {raw} WHERE duration IS NOT NULL GROUP BY 1),
est AS (
    SELECT group_key AS g, nightowl_sketch_quantile(sum(sketch), %(q)s) AS est
    FROM {tier} WHERE kind = %(kind)s GROUP BY 1)
SELECT max(abs(est - exact) / exact), count(*) FROM raw JOIN est USING (g) WHERE exact > 0
"""


def accuracy(conn, kind, raw, group):
    worst, groups = 0.0, 0
    cur = conn.cursor()
    for tier in ("nightowl_rollups_minute", "nightowl_rollups_hour", "nightowl_rollups_day"):
        for q in (0.5, 0.95, 0.99):
            cur.execute(ACCURACY.format(group=group, raw=raw, tier=tier), {"q": q, "kind": kind})
            err, n = cur.fetchone()
            if not n:
                raise RuntimeError("no {} groups to check the accuracy of".format(tier))
            worst = max(worst, float(err or 0))
            groups = max(groups, n)
    return worst, groups


def heavy_tailed(dsn):
    """Queries with lognormal and Pareto durations over 3 hours, 20 groups."""
    import orjson

    from nightowl.pgwrite import BatchWriter
    rnd = random.Random(1)
    now = time.time()
    rows = []
    for p in range(300):
        recs = []
        for i in range(100):
            g = rnd.randrange(20)
            d = (rnd.lognormvariate(8, 1.5) if g % 2 else rnd.paretovariate(1.1) * 500)
            recs.append({"t": "query", "_group": "heavy%02d" % g, "sql": "q%d" % g,
                         "duration": int(d), "timestamp": now - 3 * 3600 + (p * 100 + i) * 0.36})
        rows.append((p + 1, orjson.dumps(recs)))
    w = BatchWriter(dsn, "heavy", str(uuid.uuid4()))
    for k in range(0, len(rows), 50):
        w.write(rows[k:k + 50])
    w.close()


def seed_routes(conn, routes):
    """routes x 26 h of minute rows (5 requests each) and hour rows (300 each), with
    their min/max, from pools of lognormal samples, the current hour derived up to
    two minutes ago and the span of the 23 whole hours before it kept; inserted oldest bucket first, as the drain writes them (a table filled route by route puts every row of a
    minute on its own page, which no agent does)."""
    from nightowl.rollups import sketch
    rnd = random.Random(2)
    pools = {"minute": ([], [], []), "hour": ([], [], [])}
    for tier, size, samples in (("minute", 200, 5), ("hour", 100, 300)):
        sketches, lows, highs = pools[tier]
        for _ in range(size):
            values = [int(rnd.lognormvariate(11, 0.8)) for _ in range(samples)]
            s = {}
            for v in values:
                sketch.add(s, v)
            sketches.append(sketch.encode(s))
            lows.append(min(values))
            highs.append(max(values))
    cur = conn.cursor()
    for tier, table, unit, width, count, span in (
            ("minute", "nightowl_rollups_minute", "mins", 200, 5, 26 * 60),
            ("hour", "nightowl_rollups_hour", "hours", 100, 300, 26)):
        sketches, lows, highs = pools[tier]
        cur.execute("""
            INSERT INTO {table} (bucket, kind, environment, group_key, label, count, sum_us,
                                 min_us, max_us, sketch)
            SELECT date_trunc(%(tier)s, now()) - make_interval({unit} => m), 'request', 'seed',
                   'route' || r, 'GET /route/' || r, %(count)s, %(count)s * 60000,
                   (%(lows)s::bigint[])[p], (%(highs)s::bigint[])[p],
                   (%(pool)s::text[])[p]::numeric
            FROM generate_series(1, %(routes)s) r, generate_series(0, %(span)s) m,
                 LATERAL (SELECT 1 + (r * 31 + m) %% %(width)s AS p) AS pick
            ORDER BY m DESC, r""".format(
            table=table, unit=unit),
            {"tier": tier, "count": count, "lows": lows, "highs": highs, "pool": sketches,
             "routes": routes, "span": span, "width": width})
    # as a running agent leaves the current hour: derived up to a cut-off two
    # minutes back (the marker), and a batch since then in its live minutes
    cur.execute("""
        INSERT INTO nightowl_rollups_pending (environment, hour, minute, derived)
        VALUES ('seed', date_trunc('hour', now()),
                greatest(date_trunc('hour', now()), date_trunc('minute', now()) - interval '2 min'),
                true),
               ('seed', date_trunc('hour', now()), date_trunc('minute', now()), false)""")
    # and the span of the last 23 whole hours the deriver keeps beside them
    from nightowl.rollups import span
    cur.execute("SELECT date_trunc('minute', now()) - interval '2 min'")
    span.refresh(cur, cur.fetchone()[0], set())
    conn.commit()
    cur.execute("ANALYZE nightowl_rollups_minute; ANALYZE nightowl_rollups_hour")
    conn.commit()


def time_top(conn, routes, minutes_only=False, limit=None):
    from datetime import timedelta

    from nightowl.rollups import query
    times = []
    for _ in range(5):
        now = query.db_now(conn)
        t = time.perf_counter()
        if minutes_only:
            real = query.plan
            query.plan = lambda c, k, a, b, e=None: [
                ("minute", query.floor_time(a, 60), query.ceil_time(b, 60))]
            try:
                rows = query.top(conn, "request", now - timedelta(hours=24), now,
                                 limit=limit or routes)
            finally:
                query.plan = real
        else:
            rows = query.top(conn, "request", now - timedelta(hours=24), now,
                             limit=limit or routes)
        times.append(time.perf_counter() - t)
        conn.rollback()
    assert len(rows) == (limit or routes), len(rows)
    return statistics.median(times) * 1000


def run(args):
    import shutil
    import tempfile

    import psycopg2

    from nightowl import migrate
    from nightowl.errors import CommandError
    say = lambda text: print(text, flush=True)
    made = []
    tmp = tempfile.mkdtemp(prefix="nightowl-bench-rollups-")
    try:
        def scratch():
            name, dsn = scratch_db.create_database(args.admin_dsn)
            made.append(name)
            migrate.apply(dsn, log=drain_bench._Quiet())
            return dsn
        if args.rounds < 1:
            raise CommandError("--rounds must be at least 1")
        payloads = drain_bench.make_payloads(args.payloads)
        say("payloads: {} (fixture mix), {} workers, batch {}".format(
            len(payloads), args.workers, args.batch_size))
        on, off, dsn = _drain(args, payloads, scratch, say, tmp)
        ratio = on / off
        say("rollups on / off: {:.2f} (best of {} rounds each; target >= 0.8)".format(
            ratio, args.rounds))

        # the hour and day tiers as the agent's DeriveService leaves them (every
        # minute, off the drain's transaction): timed, not part of the drain figure
        conn = psycopg2.connect(dsn)
        from nightowl.rollups import derive
        t = time.perf_counter()
        derived = derive.run(conn, whole=True)
        derive_s = time.perf_counter() - t
        say("derived the hour and day rows of {} pending hours in {:.2f} s".format(
            derived, derive_s))
        worst_bench, n1 = accuracy(conn, "query", "nightowl_queries", "group_hash")
        conn.close()
        heavy_dsn = scratch()
        heavy_tailed(heavy_dsn)
        conn = psycopg2.connect(heavy_dsn)
        derive.run(conn, whole=True)
        worst_heavy, n2 = accuracy(conn, "query", "nightowl_queries", "group_hash")
        conn.close()
        say("accuracy vs percentile_disc (p50/p95/p99, minute/hour/day merges): worst {:.2%} on "
            "{} bench query groups, {:.2%} on {} heavy-tailed groups (target <= 2 %)".format(
                worst_bench, n1, worst_heavy, n2))

        seed_dsn = scratch()
        conn = psycopg2.connect(seed_dsn)
        t = time.perf_counter()
        seed_routes(conn, args.routes)
        say("seeded {} routes x 26 h of minute and hour rollups in {:.1f} s".format(
            args.routes, time.perf_counter() - t))
        tiered = time_top(conn, args.routes)
        top20 = time_top(conn, args.routes, limit=20)
        flat = time_top(conn, args.routes, minutes_only=True)
        conn.close()
        say("p95 per route over 24 h, {} routes: {:.0f} ms for p50/p95/p99 of every route, "
            "{:.0f} ms for p95 of every route + p50/p99 of the top 20 (span, current "
            "hour, live minutes), {:.0f} ms from minutes only (target <= 100 ms)".format(
                args.routes, tiered, top20, flat))
        say(json.dumps({"drain_rows_per_s_on": round(on), "drain_rows_per_s_off": round(off),
                        "drain_ratio": round(ratio, 3), "derive_s": round(derive_s, 3), "worst_rel_error_bench": round(worst_bench, 4),
                        "worst_rel_error_heavy": round(worst_heavy, 4),
                        "top_24h_ms": round(tiered, 1), "top20_24h_ms": round(top20, 1),
                        "top_24h_minutes_only_ms": round(flat, 1),
                        "routes": args.routes}, sort_keys=True))
        return 0
    except (psycopg2.Error, RuntimeError) as e:
        raise CommandError("rollups benchmark failed: {}".format(
            (str(e).strip().splitlines() or ["?"])[0]))
    finally:
        for name in made:
            try:
                scratch_db.drop_database(args.admin_dsn, name)
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
