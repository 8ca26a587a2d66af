"""
The agent's health over HTTP (``--health``, default 127.0.0.1:2409).

* ``GET /status``  JSON: status, reasons and every figure (README: "/status").
* ``GET /metrics`` Prometheus text, read from the same figures at scrape time.
* ``GET /healthz`` ``200 ok`` while the agent can accept and commit payloads,
  ``503 <reason>`` otherwise (for load balancers and systemd watchdogs).

The status rules are the pure function L{evaluate}.  Nothing here blocks the
reactor: the one SQLite figure that needs a query (the oldest pending row's
age) is asked of the buffer's writer thread every L{CHECK_EVERY} seconds and
cached; that same probe tells a stalled writer from a busy one.

Also the retention timer (L{RetentionService}): every hour, and a few seconds
after start, drop expired daily partitions in a thread pool this service owns.
"""

import collections
import os
import sys
import threading

import orjson
from twisted.application import service, strports
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Site

import nightowl

# -- the rules (README: "What /status means") ------------------------------

LAG_DEGRADED = 60.0         # oldest pending payload older than this: degraded
STALL_AFTER = 30.0          # writer has not answered a probe for this long: critical
WRITE_ERROR_WINDOW = 60.0   # a buffer write error this recent: critical
CRASH_LOOP_WINDOW = 600.0   # restarts counted over this window ...
CRASH_LOOP_RESTARTS = 3     # ... this many or more: a crash loop (degraded)

CHECK_EVERY = 5.0           # writer probe / history sampling period
RATE_WINDOW = 60.0          # drain rates are over the last minute
RETENTION_EVERY = 3600.0
RETENTION_FIRST = 5.0

LEVELS = ("critical", "warning", "info")


def evaluate(snapshot, now):
    """
    The health rules, as a pure function of a /status snapshot (without
    ``status``/``reasons``) and the time ``now`` (same clock as the
    snapshot's timestamps).  Returns ``(status, reasons)``; each reason is
    ``{"code", "level", "message"}``.  ``critical`` if any reason is
    critical, ``degraded`` if any is a warning, ``healthy`` otherwise
    (info reasons never change the status).
    """
    reasons = []

    def add(code, level, message):
        reasons.append({"code": code, "level": level, "message": message})

    buf = snapshot.get("buffer") or {}
    drain = snapshot.get("drain") or {}

    # critical: the agent cannot accept and commit
    if buf.get("writer_alive") is False:
        add("writer-dead", "critical",
            "the buffer writer thread is not running: payloads cannot be committed")
    since = buf.get("probe_outstanding_since")
    if since is not None and now - since >= STALL_AFTER:
        add("writer-stalled", "critical",
            "the buffer writer has not answered for {:.0f} s (disk stalled or a "
            "transaction stuck)".format(now - since))
    seen = buf.get("last_write_error_seen_at")
    if seen is not None and now - seen < WRITE_ERROR_WINDOW:
        add("write-errors", "critical",
            "a buffer write failed in the last {:.0f} s: {}".format(
                WRITE_ERROR_WINDOW, buf.get("last_error") or "unknown error"))
    if buf.get("back_pressure"):
        add("back-pressure", "critical",
            "refusing new payloads: {} rows pending (limit {}) or the writer queue is "
            "full".format(buf.get("pending", 0) + buf.get("claimed", 0),
                          buf.get("max_pending")))

    draining = bool(drain.get("enabled"))
    if not drain.get("dsn_configured"):
        add("drain-disabled", "info",
            "no DSN configured: payloads stay in the buffer (set --dsn / NIGHTOWL_DSN)")
    elif not drain.get("workers_configured"):
        add("drain-disabled", "info", "drain-workers is 0: draining is disabled")

    # degraded
    age = buf.get("oldest_pending_age_seconds")
    if draining and age is not None and age > LAG_DEGRADED:
        add("drain-lag", "warning",
            "the oldest pending payload is {:.0f} s old (over {:.0f} s): the drain is "
            "behind or stopped".format(age, LAG_DEGRADED))
    if draining and drain.get("postgres_reachable") is False:
        add("postgres-unreachable", "warning",
            "PostgreSQL is unreachable ({}); payloads wait in the buffer".format(
                drain.get("last_error") or "connection failed"))
    if draining:
        from nightowl.drain import conditions
        for code, level, message in conditions.reasons(drain):
            add(code, level, message)
    for worker in snapshot.get("workers") or ():
        frozen = worker.get("frozen_at")
        if frozen is not None and now - frozen < CRASH_LOOP_WINDOW:
            add("worker-frozen", "warning",
                "drain worker {} sent nothing past its heartbeat timeout {:.0f} s ago and was "
                "killed (stopped or wedged); its claim was released".format(
                    worker.get("worker"), now - frozen))
        recent = [t for t in worker.get("restart_times") or () if now - t < CRASH_LOOP_WINDOW]
        if len(recent) >= CRASH_LOOP_RESTARTS:
            add("worker-crash-loop", "warning",
                "drain worker {} restarted {} times in the last {:.0f} min".format(
                    worker.get("worker"), len(recent), CRASH_LOOP_WINDOW / 60))
    skew = (snapshot.get("retention") or {}).get("clock_skew_seconds")
    if skew is not None:
        add("clock-skew", "warning",
            "this host's clock is {:+.0f} s off the database's: retention drops nothing "
            "until they agree (fix NTP)".format(skew))
    if (buf.get("quarantined") or 0) > 0:
        add("quarantined", "warning",
            "{} payloads are quarantined (Postgres refused them); see `nightowl buffer "
            "inspect`, fix, then `nightowl buffer requeue`".format(buf["quarantined"]))

    levels = set(r["level"] for r in reasons)
    if "critical" in levels:
        status = "critical"
    elif "warning" in levels:
        status = "degraded"
    else:
        status = "healthy"
    return status, reasons


# -- small helpers -----------------------------------------------------------

def process_figures():
    """RSS bytes and thread count from /proc/self/status (Linux), else best effort."""
    rss = threads_ = None
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Threads:"):
                    threads_ = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    if rss is None:
        try:
            import resource
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:
            rss = 0
    if threads_ is None:
        threads_ = threading.active_count()
    return {"pid": os.getpid(), "rss_bytes": rss, "threads": threads_}


class _Series:
    """(time, value) samples of a counter; the rate over a window."""

    def __init__(self, span):
        self.span = span
        self.samples = collections.deque()

    def add(self, now, value):
        self.samples.append((now, value))
        # keep one sample at or before the window's start as the reference
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.span:
            self.samples.popleft()

    def rate(self, now):
        if len(self.samples) < 2:
            return 0.0
        t0, v0 = self.samples[0]
        t1, v1 = self.samples[-1]
        if t1 - t0 <= 0:
            return 0.0
        return max(0.0, (v1 - v0) / float(t1 - t0))


_WORKER_COUNTERS = ("batches", "payloads", "records", "rows", "quarantined", "skipped",
                    "ledger_skipped", "failures")


class RecordingLog:
    """
    A stand-in for a twisted Logger, handed to nightowl.partitions: keeps
    what it was told (safe to use from any thread), so the caller can report
    it on its own thread.
    """

    def __init__(self):
        self.infos = []
        self.errors = []

    def _format(self, format, kw):
        try:
            return format.format(**kw)
        except Exception:
            return format

    def info(self, format, **kw):
        self.infos.append(self._format(format, kw))

    debug = info

    def warn(self, format, **kw):
        self.errors.append(self._format(format, kw))

    error = warn

    def failure(self, format, failure=None, **kw):
        if failure is None:
            error = sys.exc_info()[1]
        else:
            error = failure.value
        text = self._format(format, kw)
        if error is not None:
            text += ": {}{}".format(type(error).__name__, _pgcode(error))
        self.errors.append(text)


def _pgcode(error):
    code = getattr(error, "pgcode", None)
    return " ({})".format(code) if code else ""


def sweep(dsn, retention_days, ensure=True, log=None, connect=None, now=None, clock=None,
          rollup_days=None):
    """
    One retention pass (blocking: run it in a thread): ensure the daily
    partitions ahead (when ``ensure``), drop the expired ones.  Returns
    ``{"created": [...], "dropped": [...], "errors": [...], "rollups_pruned":
    {table: rows}}``; ``rollup_days``: (minute, hour, day) tier retention in
    days, or None.  Connection errors raise (psycopg2.Error).
    """
    from nightowl import partitions
    if connect is None:
        import psycopg2
        connect = psycopg2.connect
    log = log if log is not None else RecordingLog()
    conn = connect(dsn, connect_timeout=10, application_name="nightowl-retention")
    skew = None
    try:
        created = partitions.ensure_partitions(conn, now=now, log=log) if ensure else []
        try:
            dropped = partitions.drop_expired(conn, retention_days, now=now, log=log,
                                              **({"clock": clock} if clock else {}))
        except partitions.ClockSkew as e:
            dropped, skew = [], e
        pruned = None
        if rollup_days:
            from nightowl.rollups import rebuild
            pruned = rebuild.prune(conn, *rollup_days)   # tier retention, database clock
    finally:
        conn.close()
    result = {"created": list(created), "dropped": list(dropped),
              "errors": list(getattr(log, "errors", ()))}
    if pruned is not None:
        result["rollups_pruned"] = pruned
    if skew is not None:
        # only present when retention refused: the clocks disagree
        result["clock_skew"] = {"seconds": round(skew.skew, 1), "message": str(skew)}
    return result


# -- the retention timer -------------------------------------------------------

class RetentionService(service.Service):
    """
    Every ``every`` seconds (first ``first`` seconds after start): L{sweep} in
    our own one-thread pool, never on the reactor.  Every error is caught and
    logged; the timer goes on.
    """

    name = "retention"
    log = Logger()

    def __init__(self, options, ensure, reactor, every=RETENTION_EVERY,
                 first=RETENTION_FIRST, sweep=sweep):
        self.options = options
        self.ensure = ensure
        self.reactor = reactor
        self.every = every
        self.first = first
        self._sweep = sweep
        self.pool = None
        self._call = None
        self._busy = None
        self.last = {"at": None, "created": [], "dropped": [], "errors": [], "error": None}

    def startService(self):
        service.Service.startService(self)
        self.pool = ThreadPool(minthreads=0, maxthreads=1, name="nightowl-retention")
        self.pool.start()
        self._call = self.reactor.callLater(self.first, self._tick)

    def _tick(self):
        self._call = None
        if not self.running:
            return
        d = self.run_once()
        d.addBoth(self._schedule)

    def _schedule(self, _):
        if self.running and self._call is None:
            self._call = self.reactor.callLater(self.every, self._tick)

    def run_once(self):
        """One sweep in the pool; fires with the result dict (never fails)."""
        if self._busy is not None:
            return defer.succeed(None)
        dsn = self.options.get("dsn")
        days = self.options.get("retention-days") or 14
        rollup_days = tuple(self.options.get("rollup-retention-" + tier) or default for tier, default
                            in (("minutes", 7), ("hours", 90), ("days", 730)))
        d = threads.deferToThreadPool(self.reactor, self.pool, self._sweep, dsn, days,
                                      self.ensure, rollup_days=rollup_days)
        self._busy = d

        def done(result):
            skewed = self.last.get("clock_skew")
            self.last = dict(result, at=self.reactor.seconds(), error=None)
            if result.get("clock_skew") and not skewed:
                # once per occurrence; /status reports it while it lasts
                self.log.error("retention refused to drop partitions: {message}",
                               message=result["clock_skew"]["message"])
            elif skewed and not result.get("clock_skew"):
                self.log.info("retention: the clocks agree again")
            for name in result.get("created") or ():
                self.log.info("retention: created partition {name}", name=name)
            if result.get("dropped"):
                self.log.info("retention: dropped {count} expired partitions: {names}",
                              count=len(result["dropped"]),
                              names=", ".join(result["dropped"]))
            for text in result.get("errors") or ():
                self.log.error("retention: {error}", error=text)
            return result

        def failed(f):
            error = "{}{}: {}".format(f.type.__name__, _pgcode(f.value),
                                      _first_line(f.getErrorMessage()))
            self.last = {"at": self.reactor.seconds(), "created": [], "dropped": [],
                         "errors": [], "error": error}
            self.log.error("retention sweep failed: {error}", error=error)
            return self.last

        def idle(result):
            self._busy = None
            return result
        d.addCallbacks(done, failed)
        d.addErrback(lambda f: self.log.failure("retention bookkeeping", f))
        d.addBoth(idle)
        return d

    def stopService(self):
        service.Service.stopService(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        pool, self.pool = self.pool, None
        if pool is None:
            return None
        if self._busy is None:
            pool.stop()
            return None
        # a sweep is running: wait for it off the reactor thread
        return threads.deferToThread(pool.stop)


def _first_line(text):
    return (str(text).strip().splitlines() or [""])[0]


# -- HTTP ----------------------------------------------------------------------

class _QuietSite(Site):
    """No access log line per scrape."""

    def log(self, request):
        pass


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, health):
        Resource.__init__(self)
        self.health = health


class StatusResource(_Leaf):
    def render_GET(self, request):
        snap = self.health.status()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return orjson.dumps(snap, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


class MetricsResource(_Leaf):
    def render_GET(self, request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.health.registry)


class HealthzResource(_Leaf):
    def render_GET(self, request):
        ok, reason = self.health.healthz()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if ok:
            return b"ok\n"
        request.setResponseCode(503)
        return (reason + "\n").encode("utf-8")


class _Root(Resource):
    def getChild(self, path, request):
        from twisted.web.resource import NoResource
        return NoResource(b"try /status, /metrics or /healthz".decode())


class HealthService(service.MultiService):
    """
    The health HTTP listener, the writer probe and the retention timer.
    ``root`` is the NightowlService (``metrics``, ``buffer``, ``supervisor``).
    """

    name = "health"
    log = Logger()

    def __init__(self, options, root, reactor=None, check_every=CHECK_EVERY,
                 retention=True):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.options = options
        self.root = root
        self.check_every = check_every
        # figures kept between checks
        self.oldest_pending_age = 0.0
        self.oldest_checked_at = None
        self.probe_since = None
        self._probe = None
        self._seen_write_errors = None
        self.last_write_error_seen_at = None
        self._payload_series = _Series(RATE_WINDOW)
        self._row_series = _Series(RATE_WINDOW)
        self._worker_prev = {}      # worker -> {key: last value}
        self._worker_carried = {}   # worker -> {key: totals of earlier processes}
        self._restarts_seen = {}
        self._restart_times = {}
        self._check_call = None
        self.quarantined_counted = None
        # called with (status, reasons) after every check (the health alerts)
        self.status_observers = []

        resource = _Root()
        resource.putChild(b"status", StatusResource(self))
        resource.putChild(b"metrics", MetricsResource(self))
        resource.putChild(b"healthz", HealthzResource(self))
        self.site = _QuietSite(resource)
        self.site.noisy = False
        self.http = strports.service(options["health"], self.site, reactor=reactor)
        self.http.setName("health-http")
        self.http.setServiceParent(self)

        self.registry = _make_registry(self)

        self.retention = None
        if retention and options.get("dsn"):
            supervisor = getattr(root, "supervisor", None)
            # The drain supervisor already ensures partitions every hour (in
            # its maintenance child) when it runs workers: then only drop here.
            supervisor_sweeps = (supervisor is not None
                                 and int(options.get("drain-workers") or 0) > 0)
            self.retention = RetentionService(options, ensure=not supervisor_sweeps,
                                              reactor=reactor)
            self.retention.setServiceParent(self)

    # -- lifecycle -----------------------------------------------------------

    def startService(self):
        service.MultiService.startService(self)
        self._check_call = self.reactor.callLater(0, self._check)
        waiting = getattr(self.http, "_waitingForPort", None)
        if waiting is not None:
            waiting.addCallback(self._listening)
            waiting.addErrback(lambda f: self.log.error(
                "health listener failed: {error}", error=f.getErrorMessage()))

    def _listening(self, port):
        host = port.getHost()
        self.log.info("nightowl health on {host}:{port} (/status, /metrics, /healthz)",
                      host=getattr(host, "host", "?"), port=getattr(host, "port", "?"))
        return port

    def stopService(self):
        if self._check_call is not None and self._check_call.active():
            self._check_call.cancel()
        self._check_call = None
        return service.MultiService.stopService(self)

    def port(self):
        """The bound IListeningPort (tests listen on port 0), or None."""
        waiting = getattr(self.http, "_waitingForPort", None)
        if waiting is None:
            return None
        result = []
        waiting.addCallback(lambda p: result.append(p) or p)
        return result[0] if result else None

    # -- the periodic check ----------------------------------------------------

    def _check(self):
        self._check_call = None
        if not self.running:
            return
        try:
            now = self.reactor.seconds()
            self.observe(now)
            self.probe()
            if self.status_observers:
                status, reasons = evaluate(self.snapshot(), now)
                for observer in self.status_observers:
                    observer(status, reasons)
        except Exception:
            self.log.failure("health check")
        self._check_call = self.reactor.callLater(self.check_every, self._check)

    def probe(self):
        """
        Ask the writer thread for the oldest pending row's age.  While a
        probe is unanswered no other is sent; its age is the stall measure.
        Returns the probe's Deferred (fires with the age, or None).
        """
        if self._probe is not None:
            return self._probe
        buf = self.root.buffer
        if getattr(buf, "_closed", False):
            return defer.succeed(None)
        self.probe_since = self.reactor.seconds()
        d = defer.maybeDeferred(buf.run, lambda conn: _probe_figures(conn, buf.clock()))
        self._probe = d

        def answered(figures):
            age, quarantined = figures
            self.oldest_pending_age = float(age or 0.0)
            self.quarantined_counted = quarantined
            self.oldest_checked_at = self.reactor.seconds()
            return age

        def failed(f):
            if self.running and not getattr(buf, "_closed", False):
                self.log.error("buffer probe failed: {error}", error=f.getErrorMessage())
            return None

        def done(result):
            self._probe = None
            self.probe_since = None
            return result
        d.addCallbacks(answered, failed)
        d.addBoth(done)
        return d

    def observe(self, now):
        """Sample the counters whose history matters (rates, restarts, errors)."""
        stats = self.root.buffer.stats()
        errors = stats.get("write_errors") or 0
        if self._seen_write_errors is not None and errors > self._seen_write_errors:
            self.last_write_error_seen_at = now
        self._seen_write_errors = errors
        totals = self._worker_totals()
        self._payload_series.add(now, sum(t.get("payloads", 0) for t in totals.values()))
        self._row_series.add(now, sum(t.get("rows", 0) for t in totals.values()))
        for worker, m in list(self._drain_metrics().items()):
            restarts = int(m.get("restarts") or 0)
            seen = self._restarts_seen.get(worker, 0)
            if restarts > seen:
                times = self._restart_times.setdefault(worker, [])
                times.extend([now] * (restarts - seen))
                del times[:-20]
            self._restarts_seen[worker] = restarts

    def _drain_metrics(self):
        return getattr(self.root.metrics, "drain", None) or {}

    def _worker_totals(self):
        """Per worker counters, carried across worker restarts (a reset adds the old value)."""
        out = {}
        for worker, m in self._drain_metrics().items():
            prev = self._worker_prev.setdefault(worker, {})
            carried = self._worker_carried.setdefault(worker, {})
            totals = {}
            for key in _WORKER_COUNTERS:
                try:
                    value = int(m.get(key) or 0)
                except (TypeError, ValueError):
                    value = 0
                if value < prev.get(key, 0):
                    carried[key] = carried.get(key, 0) + prev[key]
                prev[key] = value
                totals[key] = carried.get(key, 0) + value
            out[worker] = totals
        return out

    # -- the figures -----------------------------------------------------------

    def snapshot(self):
        """Every figure of /status except ``status`` and ``reasons``."""
        now = self.reactor.seconds()
        self.observe(now)
        root = self.root
        metrics = root.metrics
        buf = root.buffer
        stats = buf.stats()
        refusal = buf.refusal()
        buffer_now = buf.clock()
        last_commit_at = stats.get("last_commit_at")
        pending = stats.get("pending") or 0
        oldest = self.oldest_pending_age if pending else 0.0

        from nightowl.wire import REASONS
        rejected = dict((reason, 0) for reason in REASONS)
        rejected.update(metrics.rejected)

        totals = self._worker_totals()
        workers = []
        rows_by_table = collections.Counter()
        reachable = []
        last_error = (None, -1.0)
        supervisor = getattr(root, "supervisor", None)
        stopping = bool(getattr(supervisor, "stopping", False))
        for worker, m in sorted(self._drain_metrics().items(), key=lambda kv: str(kv[0])):
            alive = bool(m.get("alive"))
            restart_times = list(m.get("restart_times") or self._restart_times.get(worker, ()))
            recent = [t for t in restart_times if now - t < CRASH_LOOP_WINDOW]
            if alive:
                state = "running"
            elif stopping or not self.running:
                state = "stopped"
            else:
                state = "restarting"
            for table, n in (m.get("rows_by_table") or {}).items():
                rows_by_table[table] += int(n or 0)
            if alive and m.get("pg_reachable") is not None:
                reachable.append(bool(m["pg_reachable"]))
            updated = m.get("updated_at") or 0.0
            if m.get("last_error") and updated >= last_error[1]:
                last_error = (m["last_error"], updated)
            t = totals.get(worker, {})
            workers.append({
                "worker": m.get("worker", worker),
                "pid": m.get("pid"),
                "state": state,
                "alive": alive,
                "restarts": int(m.get("restarts") or 0),
                "restarts_last_10min": len(recent),
                "crash_loop": len(recent) >= CRASH_LOOP_RESTARTS,
                "restart_times": restart_times,
                "exit_code": m.get("exit_code"),
                "exit_signal": m.get("exit_signal"),
                "payloads": t.get("payloads", 0),
                "rows": t.get("rows", 0),
                "batches": t.get("batches", 0),
                "batches_failed": t.get("failures", 0),
                "postgres_reachable": m.get("pg_reachable"),
                "last_error": m.get("last_error"),
                "blocked": m.get("blocked"),
                "breaker": list(m.get("breaker") or ()),
                "seconds_since_success": m.get("seconds_since_success"),
                "frozen_at": m.get("frozen_at"),
                "frozen_count": m.get("frozen_count", 0),
            })

        dsn = self.options.get("dsn")
        workers_configured = int(self.options.get("drain-workers") or 0)
        from nightowl.drain import conditions
        blocking = conditions.gather(self._drain_metrics().values())
        if reachable:
            postgres_reachable = all(reachable)
        else:
            postgres_reachable = None

        def total(key):
            return sum(t.get(key, 0) for t in totals.values())

        retention = None
        if self.retention is not None:
            last = self.retention.last
            retention = {
                "ensures_partitions": self.retention.ensure,
                "last_run_age_seconds": _age(now, last.get("at")),
                "last_dropped": list(last.get("dropped") or ()),
                "last_error": last.get("error") or (last.get("errors") or [None])[-1],
                "retention_days": self.options.get("retention-days"),
                "clock_skew_seconds": (last.get("clock_skew") or {}).get("seconds"),
            }

        snap = {
            "version": nightowl.__version__,
            "uptime_seconds": _round(now - metrics.started),
            "ingest": {
                "accepted": metrics.accepted,
                "accepted_bytes": metrics.accepted_bytes,
                "rejected": rejected,
                "rejected_total": sum(rejected.values()),
                "accept_rate": _round(metrics.accept_rate.rate(now)),
                "reject_rate": _round(metrics.reject_rate.rate(now)),
                "connections_open": metrics.connections_open,
                "inflight_bytes": metrics.inflight_bytes,
                "pings": metrics.pings,
            },
            "buffer": {
                "path": stats.get("path"),
                "buffer_id": stats.get("buffer_id"),
                "pending": pending,
                "claimed": stats.get("claimed") or 0,
                "quarantined": (self.quarantined_counted
                                if self.quarantined_counted is not None
                                else stats.get("quarantined") or 0),
                "drained_kept": stats.get("drained_kept") or 0,
                "queued": stats.get("queued") or 0,
                "oldest_pending_age_seconds": _round(oldest),
                "oldest_pending_checked_age_seconds": _age(now, self.oldest_checked_at),
                "file_bytes": stats.get("file_bytes") or 0,
                "wal_bytes": stats.get("wal_bytes") or 0,
                "back_pressure": refusal is not None,
                "max_pending": stats.get("max_pending"),
                "appended": stats.get("appended") or 0,
                "commits": stats.get("commits") or 0,
                "write_errors": stats.get("write_errors") or 0,
                "last_error": stats.get("last_error"),
                "last_write_error_seen_at": self.last_write_error_seen_at,
                "last_commit_age_seconds": _age(buffer_now, last_commit_at),
                "writer_alive": buf.alive(),
                "probe_outstanding_since": self.probe_since,
                "writer_unanswered_seconds": _age(now, self.probe_since) or 0.0,
            },
            "drain": {
                "enabled": bool(dsn) and workers_configured > 0 and supervisor is not None,
                "dsn_configured": bool(dsn),
                "workers_configured": workers_configured,
                "payloads": total("payloads"),
                "rows": total("rows"),
                "records": total("records"),
                "rows_by_table": dict(rows_by_table),
                "batches": total("batches"),
                "batches_failed": total("failures"),
                "quarantined": total("quarantined"),
                "skipped": total("skipped"),
                "ledger_skipped": total("ledger_skipped"),
                "payload_rate": _round(self._payload_series.rate(now)),
                "row_rate": _round(self._row_series.rate(now)),
                "postgres_reachable": postgres_reachable,
                "last_error": last_error[0],
                "lag_seconds": _round(oldest),
                "migrated": getattr(supervisor, "migrated", None),
                "migration_error": getattr(supervisor, "migration_error", None),
                "mode": ("buffer-only" if not dsn else
                         "draining" if workers_configured > 0 and supervisor is not None
                         else "disabled"),
                "blocked": blocking["blocked"],
                "breaker": blocking["breaker"],
            },
            "workers": workers,
            "process": process_figures(),
            "retention": retention,
        }
        if getattr(metrics, "alerts", None) is not None:  # only with an alert dispatcher
            snap["alerts"] = metrics.alerts
        return snap

    def status(self):
        """The /status document: the snapshot with ``status`` and ``reasons`` first."""
        snap = self.snapshot()
        status, reasons = evaluate(snap, self.reactor.seconds())
        out = {"status": status, "reasons": reasons}
        out.update(snap)
        return out

    def healthz(self):
        """(ok, reason): can the agent accept and commit payloads right now?"""
        snap = self.snapshot()
        _status, reasons = evaluate(snap, self.reactor.seconds())
        from nightowl.drain.conditions import DRAIN_CODES
        # the drain's own blocks do not stop the agent accepting and committing
        critical = [r for r in reasons if r["level"] == "critical"
                    and r["code"] not in DRAIN_CODES]
        if critical:
            return False, "; ".join("{}: {}".format(r["code"], r["message"]) for r in critical)
        return True, "ok"


def _probe_figures(conn, now):
    """
    On the writer thread: the oldest pending row's age, and the quarantined
    rows counted from the file (rows requeued by `nightowl buffer requeue`,
    another process, are not in the writer's in-memory counters).
    """
    from nightowl.buffer import oldest_pending_age
    quarantined = conn.execute("SELECT count(*) FROM payloads WHERE state = 2").fetchone()[0]
    return oldest_pending_age(conn, now), quarantined


def _round(value, digits=3):
    return None if value is None else round(float(value), digits)


def _age(now, then):
    if then is None:
        return None
    return round(max(0.0, now - then), 3)


# -- Prometheus ------------------------------------------------------------------

STATUS_CODES = {"healthy": 0, "degraded": 1, "critical": 2}

#: (name, type, help): every metric /metrics exposes; README documents them.
METRICS = [
    ("nightowl_info", "gauge", "Always 1; the version label says which nightowl runs."),
    ("nightowl_health_status", "gauge", "0 healthy, 1 degraded, 2 critical."),
    ("nightowl_health_reason", "gauge", "1 for each active reason, labelled code and level."),
    ("nightowl_uptime_seconds", "gauge", "Seconds since the agent started."),
    ("nightowl_ingest_accepted_total", "counter", "Payloads acknowledged with 2:OK."),
    ("nightowl_ingest_accepted_bytes_total", "counter", "Bytes of acknowledged payloads."),
    ("nightowl_ingest_rejected_total", "counter", "Frames refused, by reason."),
    ("nightowl_ingest_pings_total", "counter", "PING frames answered."),
    ("nightowl_ingest_connections_open", "gauge", "Ingest connections open now."),
    ("nightowl_ingest_inflight_bytes", "gauge", "Bytes held by connections in flight."),
    ("nightowl_buffer_pending_rows", "gauge", "Payload rows waiting to be drained."),
    ("nightowl_buffer_claimed_rows", "gauge", "Payload rows claimed by drain workers."),
    ("nightowl_buffer_quarantined_rows", "gauge", "Payload rows Postgres refused."),
    ("nightowl_buffer_drained_kept_rows", "gauge", "Drained rows kept for the safety window."),
    ("nightowl_buffer_queued_operations", "gauge", "Operations waiting for the writer thread."),
    ("nightowl_buffer_oldest_pending_age_seconds", "gauge", "Age of the oldest pending row."),
    ("nightowl_buffer_file_bytes", "gauge", "Size of the SQLite file."),
    ("nightowl_buffer_wal_bytes", "gauge", "Size of the SQLite WAL file."),
    ("nightowl_buffer_back_pressure", "gauge", "1 while new payloads are refused."),
    ("nightowl_buffer_writer_up", "gauge", "1 while the writer thread runs."),
    ("nightowl_buffer_writer_unanswered_seconds", "gauge",
     "How long the writer has left the current probe unanswered (0 when idle)."),
    ("nightowl_buffer_write_errors_total", "counter", "Failed buffer transactions."),
    ("nightowl_buffer_commits_total", "counter", "Committed buffer transactions."),
    ("nightowl_buffer_last_commit_age_seconds", "gauge", "Seconds since the last commit."),
    ("nightowl_drain_payloads_total", "counter", "Payloads written to Postgres."),
    ("nightowl_drain_rows_total", "counter", "Table rows written to Postgres."),
    ("nightowl_drain_table_rows_total", "counter", "Table rows written, by table."),
    ("nightowl_drain_batches_total", "counter", "Batches committed to Postgres."),
    ("nightowl_drain_batches_failed_total", "counter", "Batch attempts that failed."),
    ("nightowl_drain_quarantined_total", "counter", "Payloads the drain quarantined."),
    ("nightowl_drain_ledger_skipped_total", "counter",
     "Payloads found already committed by the delivery ledger (retries after a crash)."),
    ("nightowl_drain_payload_rate", "gauge", "Payloads drained per second, last minute."),
    ("nightowl_drain_lag_seconds", "gauge", "Age of the oldest pending payload."),
    ("nightowl_drain_postgres_up", "gauge",
     "1 reachable, 0 unreachable, -1 unknown (no worker has tried yet or no DSN)."),
    ("nightowl_drain_workers_configured", "gauge", "drain-workers."),
    ("nightowl_worker_up", "gauge", "1 while drain worker N runs."),
    ("nightowl_worker_restarts_total", "counter", "Restarts of drain worker N."),
    ("nightowl_alert_deliveries", "gauge",
     "Alert deliveries by channel and state (pending, failed = retrying, sent, dead, digested)."),
    ("nightowl_alert_sends_total", "counter", "Alert sends by this agent, by result (ok, failed)."),
    ("nightowl_process_resident_memory_bytes", "gauge", "RSS of the agent process."),
    ("nightowl_process_threads", "gauge", "Threads of the agent process."),
]


class _Collector:
    """Reads the health snapshot at scrape time."""

    def __init__(self, health):
        self.health = health

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        helps = dict((name, text) for (name, _t, text) in METRICS)
        health = self.health
        snap = health.snapshot()
        status, reasons = evaluate(snap, health.reactor.seconds())

        def gauge(name, value, labels=None, samples=()):
            fam = GaugeMetricFamily(name, helps[name], labels=labels)
            if labels is None:
                fam.add_metric([], 0 if value is None else value)
            for label_values, v in samples:
                fam.add_metric(label_values, v)
            return fam

        def counter(name, value, labels=None, samples=()):
            fam = CounterMetricFamily(name, helps[name], labels=labels)
            if labels is None:
                fam.add_metric([], value or 0)
            for label_values, v in samples:
                fam.add_metric(label_values, v)
            return fam

        ing, buf, drain, proc = snap["ingest"], snap["buffer"], snap["drain"], snap["process"]
        yield gauge("nightowl_info", None, ["version"], [([snap["version"]], 1)])
        yield gauge("nightowl_health_status", STATUS_CODES[status])
        yield gauge("nightowl_health_reason", None, ["code", "level"],
                    [([r["code"], r["level"]], 1) for r in reasons])
        yield gauge("nightowl_uptime_seconds", snap["uptime_seconds"])
        yield counter("nightowl_ingest_accepted_total", ing["accepted"])
        yield counter("nightowl_ingest_accepted_bytes_total", ing["accepted_bytes"])
        yield counter("nightowl_ingest_rejected_total", None, ["reason"],
                      [([k], v) for k, v in sorted(ing["rejected"].items())])
        yield counter("nightowl_ingest_pings_total", ing["pings"])
        yield gauge("nightowl_ingest_connections_open", ing["connections_open"])
        yield gauge("nightowl_ingest_inflight_bytes", ing["inflight_bytes"])
        yield gauge("nightowl_buffer_pending_rows", buf["pending"])
        yield gauge("nightowl_buffer_claimed_rows", buf["claimed"])
        yield gauge("nightowl_buffer_quarantined_rows", buf["quarantined"])
        yield gauge("nightowl_buffer_drained_kept_rows", buf["drained_kept"])
        yield gauge("nightowl_buffer_queued_operations", buf["queued"])
        yield gauge("nightowl_buffer_oldest_pending_age_seconds",
                    buf["oldest_pending_age_seconds"])
        yield gauge("nightowl_buffer_file_bytes", buf["file_bytes"])
        yield gauge("nightowl_buffer_wal_bytes", buf["wal_bytes"])
        yield gauge("nightowl_buffer_back_pressure", 1 if buf["back_pressure"] else 0)
        yield gauge("nightowl_buffer_writer_up", 1 if buf["writer_alive"] else 0)
        yield gauge("nightowl_buffer_writer_unanswered_seconds",
                    buf["writer_unanswered_seconds"])
        yield counter("nightowl_buffer_write_errors_total", buf["write_errors"])
        yield counter("nightowl_buffer_commits_total", buf["commits"])
        yield gauge("nightowl_buffer_last_commit_age_seconds",
                    -1 if buf["last_commit_age_seconds"] is None
                    else buf["last_commit_age_seconds"])
        yield counter("nightowl_drain_payloads_total", drain["payloads"])
        yield counter("nightowl_drain_rows_total", drain["rows"])
        yield counter("nightowl_drain_table_rows_total", None, ["table"],
                      [([t], n) for t, n in sorted(drain["rows_by_table"].items())])
        yield counter("nightowl_drain_batches_total", drain["batches"])
        yield counter("nightowl_drain_batches_failed_total", drain["batches_failed"])
        yield counter("nightowl_drain_quarantined_total", drain["quarantined"])
        yield counter("nightowl_drain_ledger_skipped_total", drain["ledger_skipped"])
        yield gauge("nightowl_drain_payload_rate", drain["payload_rate"])
        yield gauge("nightowl_drain_lag_seconds", drain["lag_seconds"])
        up = drain["postgres_reachable"]
        yield gauge("nightowl_drain_postgres_up", -1 if up is None else int(bool(up)))
        yield gauge("nightowl_drain_workers_configured", drain["workers_configured"])
        yield gauge("nightowl_worker_up", None, ["worker"],
                    [([str(w["worker"])], 1 if w["alive"] else 0) for w in snap["workers"]])
        yield counter("nightowl_worker_restarts_total", None, ["worker"],
                      [([str(w["worker"])], w["restarts"]) for w in snap["workers"]])
        alerts = snap.get("alerts") or {}
        yield gauge("nightowl_alert_deliveries", None, ["channel", "state"], [
            ([name, state], n) for name, figures in sorted((alerts.get("channels") or {}).items())
            for state, n in sorted(figures.items())])
        yield counter("nightowl_alert_sends_total", None, ["result"], [
            (["ok"], alerts.get("sends_ok", 0)), (["failed"], alerts.get("sends_failed", 0))])
        yield gauge("nightowl_process_resident_memory_bytes", proc["rss_bytes"])
        yield gauge("nightowl_process_threads", proc["threads"])


def _make_registry(health):
    from prometheus_client import CollectorRegistry
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(health))
    return registry
