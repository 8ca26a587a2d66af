"""
The delivery guarantee of an alert, in SQL: fan-out, claim, lease, retry,
dead, rate limit and digest.  Blocking psycopg2 functions; the dispatcher
runs them on its own thread pool.  All times are Postgres's ``now()``, so
agents on different machines agree.

Guarantee (README "Alerts: delivery"): an outbox row committed by the
drain is sent to every channel enabled when it is fanned out, at least
once, until the channel accepts it (2xx / SMTP 250) or ``max_age`` passes
(then the delivery is ``dead``).  Several agents on one database never send
one delivery at the same time: a claim takes the channel row ``FOR UPDATE
SKIP LOCKED`` and sets a lease (``lease_until``, ``lease_token``) on the
delivery rows it takes; nobody else claims a delivery whose lease is live.
If the agent dies mid-send its lease expires and another agent (or the same
one restarted) sends it again with the same ``delivery_id``: a receiver
that dedupes on ``X-Nightowl-Delivery`` sees each alert exactly once.  A
send that outlives its lease may be repeated too (leases are several times
the send timeout, so only a stalled agent gets there).

Delivery rows (``nightowl_alert_deliveries``):

``pending``  waiting (``next_attempt_at``), or leased and being sent
``sent``     the channel accepted it
``dead``     still failing after ``max_age`` seconds
``digested`` held back by the rate limit and folded into a digest row

Rate limit, per channel: at most ``rate_limit`` first attempts (alerts and
digests) per ``rate_window_seconds``.  Fresh deliveries over the budget are
marked ``held``; once the window allows again, every fresh due delivery of
a channel with held ones is folded into one digest ("and 37 more new
issues") that costs one slot.  Retries are never rate limited.
"""

import uuid

from psycopg2.extras import Json

from nightowl.alerts.channels import Channel

FAN_OUT_BATCH = 1000
CLAIM_LIMIT = 100          # deliveries per channel per claim
DIGEST_LISTED = 3



def _due(fresh, p=""):
    """The WHERE clause of a channel's due deliveries (``p``: a table alias and dot)."""
    return ("{p}channel_id = %(channel)s AND {p}status = 'pending' AND {p}first_claimed_at IS {n}"
            "NULL AND {p}next_attempt_at <= now() AND ({p}lease_until IS NULL OR "
            "{p}lease_until < now())").format(p=p, n="" if fresh else "NOT ")


_FRESH_DUE = _due(True)
_RETRY_DUE = _due(False)
_CLAIM_SET = ("lease_until = now() + make_interval(secs => %(lease)s), lease_token = %(token)s, "
              "attempts = attempts + 1, first_claimed_at = coalesce(first_claimed_at, now())")
_RETURNING = "RETURNING id, delivery_id, kind, event, outbox_id, payload, attempts"


def fan_out(conn, limit=FAN_OUT_BATCH):
    """
    One delivery row per (unfanned outbox row, enabled channel that wants
    its event); the outbox rows are marked.  Rows another agent is fanning
    out are skipped.  Returns the number of outbox rows handled.
    """
    with conn:
        with conn.cursor() as cur:
            cur.execute(
                "WITH batch AS (SELECT id, event FROM nightowl_alert_outbox "
                "  WHERE fanned_out_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED), "
                "made AS (INSERT INTO nightowl_alert_deliveries (channel_id, outbox_id, event) "
                "  SELECT c.id, b.id, b.event FROM batch b JOIN nightowl_alert_channels c "
                "  ON c.enabled AND (c.events IS NULL OR b.event = ANY (c.events)) "
                "  ORDER BY b.id, c.id ON CONFLICT (outbox_id, channel_id) DO NOTHING) "
                "UPDATE nightowl_alert_outbox o SET fanned_out_at = now() FROM batch "
                "WHERE o.id = batch.id", (limit,))
            return cur.rowcount


def claim(conn, lease_seconds, token=None):
    """
    Claim due deliveries of every channel no other agent is claiming for
    right now; returns ``(token, [job])``, a job being a dict with
    ``id, delivery_id, kind, event, payload, attempts, channel``.
    """
    token = token or str(uuid.uuid4())
    jobs = []
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name, type, settings, events, enabled, rate_limit, "
                        "rate_window_seconds FROM nightowl_alert_channels WHERE enabled "
                        "ORDER BY id FOR UPDATE SKIP LOCKED")
            channels = [Channel(*row) for row in cur.fetchall()]
            for channel in channels:
                args = {"channel": channel.id, "lease": float(lease_seconds), "token": token,
                        "window": float(channel.rate_window), "limit": CLAIM_LIMIT}
                rows = _claim_retries(cur, args)
                rows += _claim_fresh(cur, channel, args)
                jobs.extend(_jobs(cur, channel, rows))
    return token, jobs


def _claim_retries(cur, args):
    cur.execute("UPDATE nightowl_alert_deliveries SET " + _CLAIM_SET + " WHERE id IN ("
                "SELECT id FROM nightowl_alert_deliveries WHERE " + _RETRY_DUE +
                " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) " + _RETURNING, args)
    return cur.fetchall()


def _claim_fresh(cur, channel, args):
    cur.execute("SELECT count(*) FROM nightowl_alert_deliveries WHERE channel_id = %(channel)s "
                "AND first_claimed_at > now() - make_interval(secs => %(window)s)", args)
    budget = channel.rate_limit - cur.fetchone()[0]
    if budget <= 0:
        _hold(cur, args)
        return []
    cur.execute("SELECT EXISTS (SELECT 1 FROM nightowl_alert_deliveries WHERE " + _FRESH_DUE +
                " AND held)", args)
    if cur.fetchone()[0]:
        return _fold(cur, channel, args)
    cur.execute("UPDATE nightowl_alert_deliveries SET " + _CLAIM_SET + " WHERE id IN ("
                "SELECT id FROM nightowl_alert_deliveries WHERE " + _FRESH_DUE +
                " ORDER BY id LIMIT %(budget)s FOR UPDATE SKIP LOCKED) " + _RETURNING,
                dict(args, budget=min(budget, CLAIM_LIMIT)))
    rows = cur.fetchall()
    _hold(cur, args)
    return rows


def _hold(cur, args):
    cur.execute("UPDATE nightowl_alert_deliveries SET held = true WHERE " + _FRESH_DUE +
                " AND NOT held", args)


def _fold(cur, channel, args):
    """Every fresh due delivery of the channel becomes one digest delivery."""
    cur.execute("SELECT event, count(*) FROM nightowl_alert_deliveries WHERE " + _FRESH_DUE +
                " GROUP BY event", args)
    events = dict(cur.fetchall())
    cur.execute(
        "SELECT d.event, coalesce(o.issue_id::text, o.payload #>> '{issue,id}'), "
        "coalesce(o.payload #>> '{issue,exception_class}', o.payload #>> '{issue,target}'), "
        "o.payload #>> '{issue,message}' "
        "FROM nightowl_alert_deliveries d JOIN nightowl_alert_outbox o ON o.id = d.outbox_id "
        "WHERE " + _due(True, "d.") +
        " ORDER BY d.id LIMIT %(listed)s", dict(args, listed=DIGEST_LISTED))
    listed = [{"event": e, "issue_id": _int(i), "title": _title(name, message)}
              for (e, i, name, message) in cur.fetchall()]
    cur.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    digest = {"count": sum(events.values()), "events": events, "listed": listed,
              "rate_limit": channel.rate_limit, "window_seconds": channel.rate_window,
              "at": cur.fetchone()[0]}
    cur.execute("INSERT INTO nightowl_alert_deliveries (channel_id, kind, event, payload, "
                "lease_until, lease_token, attempts, first_claimed_at) VALUES (%(channel)s, "
                "'digest', 'digest', %(payload)s, now() + make_interval(secs => %(lease)s), "
                "%(token)s, 1, now()) " + _RETURNING, dict(args, payload=Json(digest)))
    row = cur.fetchone()
    cur.execute("UPDATE nightowl_alert_deliveries SET status = 'digested', digest_id = %(digest)s "
                "WHERE " + _FRESH_DUE, dict(args, digest=row[0]))
    return [row]


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _title(name, message):
    name = name or "unknown"
    return "{}: {}".format(name, message) if message else name


def _jobs(cur, channel, rows):
    outbox_ids = [r[4] for r in rows if r[4] is not None]
    payloads = {}
    if outbox_ids:
        cur.execute("SELECT id, payload FROM nightowl_alert_outbox WHERE id = ANY (%s)",
                    (outbox_ids,))
        payloads = dict(cur.fetchall())
    out = []
    for (pk, delivery_id, kind, event, outbox_id, payload, attempts) in rows:
        out.append({"id": pk, "delivery_id": str(delivery_id), "kind": kind, "event": event,
                    "payload": payload if kind == "digest" else payloads.get(outbox_id) or {},
                    "attempts": attempts, "channel": channel})
    return out


def finish(conn, pk, token, error=None, retry_in=0.0, max_age=86400.0):
    """
    Record a send's outcome under our lease: ``error`` None = sent; else
    retry in ``retry_in`` seconds, or ``dead`` if that is past ``max_age``
    from the delivery's creation.  Returns the new status, or None if the
    lease was lost (another agent took the delivery over).
    """
    with conn:
        with conn.cursor() as cur:
            if error is None:
                cur.execute("UPDATE nightowl_alert_deliveries SET status = 'sent', "
                            "sent_at = now(), lease_until = NULL, last_error = NULL "
                            "WHERE id = %s AND lease_token = %s RETURNING status", (pk, token))
            else:
                cur.execute(
                    "UPDATE nightowl_alert_deliveries SET lease_until = NULL, "
                    "last_error = %(error)s, next_attempt_at = now() + make_interval("
                    "secs => %(delay)s), status = CASE WHEN now() + make_interval(secs => "
                    "%(delay)s) > created_at + make_interval(secs => %(max_age)s) "
                    "THEN 'dead' ELSE 'pending' END "
                    "WHERE id = %(pk)s AND lease_token = %(token)s AND status = 'pending' "
                    "RETURNING status", {"error": str(error)[:1000], "delay": float(retry_in),
                                         "max_age": float(max_age), "pk": pk, "token": token})
            row = cur.fetchone()
            return row[0] if row else None


def stats(conn):
    """{channel name: {"pending", "failed", "sent", "dead", "digested"}} (failed: pending
    deliveries whose last attempt failed; they are retried)."""
    with conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.name, d.status, d.last_error IS NOT NULL, count(d.id) "
                "FROM nightowl_alert_channels c LEFT JOIN nightowl_alert_deliveries d "
                "ON d.channel_id = c.id GROUP BY 1, 2, 3")
            out = {}
            for name, status, failed, n in cur.fetchall():
                figures = out.setdefault(name, {"pending": 0, "failed": 0, "sent": 0,
                                                "dead": 0, "digested": 0})
                if status is None:
                    continue
                if status == "pending" and failed:
                    figures["failed"] += n
                elif status in figures:
                    figures[status] += n
            return out
