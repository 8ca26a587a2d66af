"""
Seed a migrated database with a small, known set of telemetry for the
dashboard tests: requests on two routes (one hostile path), an N+1 request,
queries (one with hostile SQL), cache hits/misses, a job, an outgoing
request, a command, a scheduled task, logs, and two exception issues (one
with a hostile message).  Returns the ids and figures the tests look for.
"""

import datetime
import json
import uuid

HOSTILE_MESSAGE = "<script>window.__pwned=1</script>"
HOSTILE_ROUTE = '/x/"><img src=x onerror=window.__pwned=1>'
HOSTILE_SQL = "select 1 /* </svg><script>window.__pwned=1</script> */"


def seed(conn, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    cur = conn.cursor()
    trace = str(uuid.uuid4())
    job_attempt = str(uuid.uuid4())
    t0 = now - datetime.timedelta(minutes=30)
    ts = t0.timestamp()

    def at(minutes):
        return now - datetime.timedelta(minutes=minutes)
    # 40 requests on /orders (200, 10..49 ms), 2 errors; 3 on the hostile route
    rows = []
    for i in range(40):
        rows.append((at(i % 50 + 1), "production", "g-orders", "GET", "/orders", "/orders",
                     500 if i < 2 else 200, (10 + i) * 1000, str(uuid.uuid4()),
                     at(i % 50 + 1).timestamp()))
    for i in range(3):
        rows.append((at(5 + i), "production", "g-hostile", "GET", HOSTILE_ROUTE, HOSTILE_ROUTE,
                     200, 900000 + i * 1000, str(uuid.uuid4()), at(5 + i).timestamp()))
    rows.append((t0, "production", "g-orders", "GET", "/orders/7", "/orders", 200, 250000,
                 trace, ts))
    cur.executemany(
        "INSERT INTO nightowl_requests (created_at, environment, group_hash, method, url, "
        "route_path, status_code, duration, trace_id, timestamp) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
    # the traced request: 12 runs of one query (N+1), one hostile query, cache, outgoing, log
    for i in range(12):
        cur.execute("INSERT INTO nightowl_queries (created_at, environment, group_hash, trace_id, "
                    "execution_id, execution_source, sql_query, duration, connection, timestamp) "
                    "VALUES (%s, 'production', 'q-nplus1', %s, %s, 'request', "
                    "'select * from items where order_id = ?', %s, 'pgsql', %s)",
                    (t0, trace, trace, 1500 + i, ts + 0.01 + i * 0.005))
    cur.execute("INSERT INTO nightowl_queries (created_at, environment, group_hash, trace_id, "
                "execution_id, sql_query, duration, connection, timestamp) VALUES "
                "(%s, 'production', 'q-hostile', %s, %s, %s, 70000, 'pgsql', %s)",
                (t0, trace, trace, HOSTILE_SQL, ts + 0.1))
    for kind, n in (("hit", 6), ("miss", 2)):
        for i in range(n):
            cur.execute("INSERT INTO nightowl_cache_events (created_at, environment, group_hash, "
                        "trace_id, execution_id, event_type, key, store, duration, timestamp) "
                        "VALUES (%s, 'production', 'c-user', %s, %s, %s, 'user:1', 'redis', 300, %s)",
                        (t0, trace, trace, kind, ts + 0.15))
    cur.execute("INSERT INTO nightowl_outgoing_requests (created_at, environment, group_hash, "
                "trace_id, execution_id, host, method, url, status_code, duration, timestamp) "
                "VALUES (%s, 'production', 'o-pay', %s, %s, 'pay.example.com', 'POST', "
                "'https://pay.example.com/charge', 201, 80000, %s)", (t0, trace, trace, ts + 0.12))
    cur.execute("INSERT INTO nightowl_logs (created_at, environment, trace_id, execution_id, "
                "level, message, timestamp) VALUES (%s, 'production', %s, %s, 'warning', "
                "'payment slow', %s)", (t0, trace, trace, ts + 0.2))
    cur.execute("INSERT INTO nightowl_jobs (created_at, environment, group_hash, trace_id, "
                "attempt_id, job_class, status, duration, record_type, timestamp) VALUES "
                "(%s, 'production', 'j-mail', %s, %s, 'App\\Jobs\\SendReceipt', 'processed', "
                "42000, 'job-attempt', %s)", (t0, trace, job_attempt, ts + 0.3))
    cur.execute("INSERT INTO nightowl_commands (created_at, environment, group_hash, trace_id, "
                "name, command, exit_code, duration, timestamp) VALUES (%s, 'production', "
                "'cmd-1', %s, 'migrate', 'php artisan migrate', 0, 1200000, %s)",
                (at(20), str(uuid.uuid4()), at(20).timestamp()))
    cur.execute("INSERT INTO nightowl_scheduled_tasks (created_at, environment, group_hash, "
                "trace_id, command, status, duration, timestamp) VALUES (%s, 'production', "
                "'st-1', %s, 'php artisan reports:daily', 'processed', 3400000, %s)",
                (at(25), str(uuid.uuid4()), at(25).timestamp()))
    # exceptions and their issues
    frames = json.dumps([{"file": "app/Http/Controllers/OrderController.php:42",
                          "source": "App\\Http\\Controllers\\OrderController->show()"},
                         {"file": "vendor/laravel/framework/src/Router.php:10", "source": ""}])
    issues = {}
    for fp, cls, msg, user in (("fp-boom", "RuntimeException", "Payment provider failed", "u-1"),
                               ("fp-hostile", "App\\Exceptions\\Evil", HOSTILE_MESSAGE, "u-2")):
        for i in range(3):
            cur.execute("INSERT INTO nightowl_exceptions (created_at, environment, trace_id, "
                        "execution_id, class, message, file, line, trace, handled, fingerprint, "
                        "user_id, timestamp) VALUES (%s, 'production', %s, %s, %s, %s, "
                        "'app/Http/Controllers/OrderController.php', 42, %s, false, %s, %s, %s)",
                        (at(3 + i), trace, trace, cls, msg, frames, fp, user, ts + 0.25))
        cur.execute("INSERT INTO nightowl_issues (type, status, exception_class, exception_message, "
                    "group_hash, first_seen_at, last_seen_at, occurrences_count, users_count, "
                    "environment) VALUES ('exception', 'open', %s, %s, %s, %s, %s, 3, 1, "
                    "'production') RETURNING id", (cls, msg, fp, at(5), at(3)))
        issue_id = cur.fetchone()[0]
        issues[fp] = issue_id
        cur.execute("INSERT INTO nightowl_issue_users (issue_id, user_id) VALUES (%s, %s)",
                    (issue_id, user))
        cur.execute("INSERT INTO nightowl_users (user_id, name, email, first_seen_at, "
                    "last_seen_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (user, "User " + user, user + "@example.com", at(5), at(3)))
    conn.commit()
    # The figures pages read rollups: fold the seeded raw rows into them through
    # the same code as `nightowl rollups rebuild`.
    from nightowl.rollups import rebuild
    for hour in rebuild.hours(now - datetime.timedelta(hours=2),
                              now + datetime.timedelta(minutes=1)):
        rebuild.rebuild_hour(conn, hour)
    return {"trace": trace, "job_attempt": job_attempt, "issues": issues, "now": now,
            "orders_count": 41, "hostile_count": 3}
