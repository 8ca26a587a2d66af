"""
Configuration (one source of truth) and the twistd entry point.

Every option can also be given as a ``NIGHTOWL_*`` environment variable; the
command line wins.  Values from either source go through the same coerce
functions in ``postOptions`` so a bad value stops startup with one line.
"""

import os

from twisted.python import usage

from nightowl import __version__
from nightowl import coerce

DEFAULT_LISTEN = "tcp:2407:interface=127.0.0.1"
DEFAULT_HEALTH = "tcp:2409:interface=127.0.0.1"
DEFAULT_DASHBOARD = "tcp:2410:interface=127.0.0.1"
#: where contrib/nightowl.service and supervisord.conf keep it; created if missing
DEFAULT_BUFFER = "/var/lib/nightowl/buffer.sqlite"


# (long name, short, default, env var, coerce, help)
PARAMETERS = [
    ("listen", "l", DEFAULT_LISTEN, "NIGHTOWL_LISTEN", coerce.strports("listen"),
     "Ingest endpoint (twisted strports)."),
    ("buffer", "b", DEFAULT_BUFFER, "NIGHTOWL_BUFFER", coerce.text("buffer"),
     "Path of the SQLite buffer file."),
    ("token", "t", None, "NIGHTOWL_TOKEN", coerce.text("token"),
     "Nightwatch token; frames must carry its hash. Unset: any token hash is accepted. "
     "Falls back to NIGHTWATCH_TOKEN."),
    ("max-frame-bytes", None, 10 * 1024 * 1024, "NIGHTOWL_MAX_FRAME_BYTES",
     coerce.size("max-frame-bytes"), "Largest frame accepted on the wire."),
    ("max-inflated-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_MAX_INFLATED_BYTES",
     coerce.size("max-inflated-bytes"), "Largest payload a gzip frame may inflate to."),
    ("frame-timeout", None, 10.0, "NIGHTOWL_FRAME_TIMEOUT", coerce.positive_float("frame-timeout"),
     "Seconds a connection may take to deliver its frame."),
    ("buffer-sync", None, "normal", "NIGHTOWL_BUFFER_SYNC", coerce.choice("buffer-sync", ("normal", "full")),
     "SQLite synchronous mode: 'normal' survives an agent crash; 'full' also survives "
     "power loss, at a throughput cost."),
    ("max-pending", None, 1000000, "NIGHTOWL_MAX_PENDING", coerce.positive_int("max-pending"),
     "Back-pressure: refuse new payloads while more than this many rows wait in the buffer."),
    ("max-queue", None, 20000, "NIGHTOWL_MAX_QUEUE", coerce.positive_int("max-queue"),
     "Back-pressure: refuse new payloads while this many wait for the writer thread."),
    ("max-queue-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_MAX_QUEUE_BYTES",
     coerce.size("max-queue-bytes"),
     "Back-pressure: refuse new payloads while this many (inflated) bytes wait for the "
     "writer thread."),
    ("max-check-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_MAX_CHECK_BYTES",
     coerce.size("max-check-bytes"),
     "Back-pressure: inflated bytes that big and gzip frames may hold while they are "
     "inflated and checked off the writer thread."),
    ("dsn", None, None, "NIGHTOWL_DSN", coerce.dsn("dsn"),
     "PostgreSQL DSN to drain into. Unset: buffer only."),
    ("ingest-processes", None, 1, "NIGHTOWL_INGEST_PROCESSES",
     coerce.positive_int("ingest-processes"),
     "Processes accepting on the --listen port (SO_REUSEPORT, Linux only), each with its "
     "own buffer file (<buffer>, <buffer>.1, ...), writer thread and drain workers. "
     "1: one process, as always."),
    ("forward", None, None, "NIGHTOWL_FORWARD", coerce.host_port("forward"),
     "Also deliver every acknowledged payload, as the byte-identical frame, to the agent at "
     "HOST:PORT (e.g. the official Nightwatch agent): at least once, queued in the buffer "
     "file. Unset or 'none': off."),
    ("forward-max-rows", None, 1000000, "NIGHTOWL_FORWARD_MAX_ROWS",
     coerce.positive_int("forward-max-rows"),
     "Forward backlog bound in frames: past it the oldest forwards are dropped and counted "
     "(never the Postgres copy)."),
    ("forward-max-bytes", None, 1024 ** 3, "NIGHTOWL_FORWARD_MAX_BYTES",
     coerce.size("forward-max-bytes"),
     "Forward backlog bound in frame bytes: past it the oldest forwards are dropped and "
     "counted."),
    ("forward-inflight", None, 8, "NIGHTOWL_FORWARD_INFLIGHT",
     coerce.positive_int("forward-inflight"),
     "Connections to the --forward upstream open at once at most."),
    ("forward-timeout", None, 10.0, "NIGHTOWL_FORWARD_TIMEOUT",
     coerce.positive_float("forward-timeout"),
     "Seconds one forwarded frame may take (connect, send, reply) before it is retried."),
    ("drain-workers", None, 2, "NIGHTOWL_DRAIN_WORKERS", coerce.non_negative_int("drain-workers"),
     "Number of drain worker processes (0 disables draining)."),
    ("batch-size", None, 5000, "NIGHTOWL_BATCH_SIZE", coerce.positive_int("batch-size"),
     "Payload rows a drain worker claims per batch."),
    ("batch-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_BATCH_BYTES", coerce.size("batch-bytes"),
     "Payload bytes a drain worker claims per batch at most (always at least one payload); "
     "a worker that dies on a claim gets half as many rows, down to one, which is "
     "then quarantined."),
    ("worker-timeout", None, 60.0, "NIGHTOWL_WORKER_TIMEOUT", coerce.positive_float("worker-timeout"),
     "Seconds a drain worker may stay silent (no heartbeat) before it is killed as frozen "
     "and its claim released."),
    ("environment", None, "production", "NIGHTOWL_ENVIRONMENT", coerce.text("environment"),
     "Environment name stamped on every row."),
    ("health", None, DEFAULT_HEALTH, "NIGHTOWL_HEALTH", coerce.strports("health", allow_none=True),
     "Health/metrics HTTP endpoint (strports), or 'none'."),
    ("dashboard", None, DEFAULT_DASHBOARD, "NIGHTOWL_DASHBOARD",
     coerce.strports("dashboard", allow_none=True),
     "Dashboard HTTP endpoint (strports), or 'none'. Needs --dsn. Off loopback it needs a "
     "password."),
    ("dashboard-password-file", None, None, "NIGHTOWL_DASHBOARD_PASSWORD_FILE",
     coerce.text("dashboard-password-file"),
     "File holding the dashboard password (first line). Or set NIGHTOWL_DASHBOARD_PASSWORD. "
     "Unset: no login, allowed on loopback only."),
    ("retention-days", None, 14, "NIGHTOWL_RETENTION_DAYS", coerce.positive_int("retention-days"),
     "Daily partitions older than this are dropped."),
    ("alerts", None, "on", "NIGHTOWL_ALERTS", coerce.choice("alerts", ("on", "off")),
     "'on': send the alerts of the channels in Postgres (needs --dsn); 'off': none."),
    ("alerts-poll", None, 2.0, "NIGHTOWL_ALERTS_POLL", coerce.positive_float("alerts-poll"),
     "Seconds between alert dispatcher rounds (fan-out, claim, send)."),
    ("alerts-timeout", None, 15.0, "NIGHTOWL_ALERTS_TIMEOUT", coerce.positive_float("alerts-timeout"),
     "Seconds one alert send (HTTP or SMTP) may take."),
    ("alerts-retry-for", None, 86400.0, "NIGHTOWL_ALERTS_RETRY_FOR",
     coerce.positive_float("alerts-retry-for"),
     "Seconds a failing alert is retried (with backoff) before it is marked dead."),
    ("health-alert-hold", None, 30.0, "NIGHTOWL_HEALTH_ALERT_HOLD",
     coerce.positive_float("health-alert-hold"),
     "Seconds a health status must hold before it is alerted."),
    ("health-alert-every", None, 600.0, "NIGHTOWL_HEALTH_ALERT_EVERY",
     coerce.positive_float("health-alert-every"),
     "At most one agent-health alert per this many seconds."),
    ("rollup-retention-minutes", None, 7, "NIGHTOWL_ROLLUP_RETENTION_MINUTES",
     coerce.positive_int("rollup-retention-minutes"), "Days of per-minute rollups kept."),
    ("rollup-retention-hours", None, 90, "NIGHTOWL_ROLLUP_RETENTION_HOURS",
     coerce.positive_int("rollup-retention-hours"), "Days of per-hour rollups kept."),
    ("rollup-retention-days", None, 730, "NIGHTOWL_ROLLUP_RETENTION_DAYS",
     coerce.positive_int("rollup-retention-days"), "Days of per-day rollups kept."),
    ("alert-retention-days", None, 30, "NIGHTOWL_ALERT_RETENTION_DAYS",
     coerce.positive_int("alert-retention-days"),
     "Days of sent, dead and digested alert history kept (pending alerts are never pruned)."),
]

FLAGS = [
    ("no-migrate", None, "NIGHTOWL_NO_MIGRATE",
     "Do not apply schema migrations at startup."),
]

_TRUE = ("1", "true", "yes", "on")


class Options(usage.Options):
    """
    Options of ``twistd nightowl`` and of ``nightowl.tac``.
    """

    synopsis = "[options]"
    longdesc = ("Accepts laravel/nightwatch SDK frames, commits them to a SQLite "
                "buffer before acknowledging, and drains them into PostgreSQL.")

    optParameters = [[long, short, None, help + " [env {}; default: {}]".format(env, default)]
                     for (long, short, default, env, _c, help) in PARAMETERS]
    optFlags = [[long, short, help + " [env {}]".format(env)]
                for (long, short, env, help) in FLAGS]

    def __init__(self, environ=None, exit_on_error=True):
        usage.Options.__init__(self)
        self._environ = os.environ if environ is None else environ
        self._exit_on_error = exit_on_error

    def parseOptions(self, options=None):
        """
        As twistd calls it: a configuration error ends the process with one
        line on stderr (``nightowl: <reason>``) instead of twistd's usage dump
        and nothing is opened or created.  ``parse`` raises ``UsageError``.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            if not self._exit_on_error:
                raise
            raise SystemExit("nightowl: {} (see twistd nightowl --help)".format(e))

    def opt_version(self):
        """Print the version and exit."""
        print("nightowl {}".format(__version__))
        raise SystemExit(0)

    def postOptions(self):
        env = self._environ
        for (long, _short, _default, _var, _coerce, _help) in PARAMETERS:
            self.opts[long] = option_value(long, self.opts.get(long), env)
        for (long, _short, var, _help) in FLAGS:
            if not self.opts.get(long):
                self.opts[long] = env.get(var, "").strip().lower() in _TRUE
            else:
                self.opts[long] = True
        if self.opts["dsn"] is not None and not self.opts["dsn"].strip():
            self.opts["dsn"] = None
        if not self.opts["buffer"].strip():
            raise usage.UsageError("--buffer: a file path is required")
        # the password itself only from the environment (never on a command line)
        self.opts["dashboard-password"] = env.get("NIGHTOWL_DASHBOARD_PASSWORD") or None
        if self.opts["ingest-processes"] > 1:
            from nightowl.multiproc.parent import check_options
            check_options(self.opts)     # raises UsageError with one line
        if self.opts["max-inflated-bytes"] < self.opts["max-frame-bytes"]:
            raise usage.UsageError(
                "--max-inflated-bytes must be at least --max-frame-bytes")


def option_value(name, given=None, environ=None):
    """
    One option as the agent resolves it: ``given`` (the command line), else
    its ``NIGHTOWL_*`` variable, else the default; coerced.  The admin
    commands use it to find what the agent uses (``nightowl buffer``).
    """
    env = os.environ if environ is None else environ
    for (long, _short, default, var, to_value, _help) in PARAMETERS:
        if long != name:
            continue
        value = given
        if value is None:
            value = env.get(var)
            if value is None and long == "token":
                value = env.get("NIGHTWATCH_TOKEN")
        return default if value is None else to_value(value)
    raise KeyError(name)


def makeService(options, reactor=None):
    """
    The wiring diagram: read the parsed Options once and build each service
    from the named values it needs; the root service starts them in order.
    """
    from nightowl import stopsignals
    if reactor is None:
        from twisted.internet import reactor
    stopsignals.install(reactor)  # a group stop's second TERM is no traceback
    if options["ingest-processes"] > 1:
        # N agents on one SO_REUSEPORT port under a parent (nightowl.multiproc)
        from nightowl.multiproc.parent import make_parent
        if options["dashboard"]:
            dashboard_password(options)     # an open dashboard is refused before any spawn
        return make_parent(options, reactor=reactor)
    from nightowl.buffer.writer import BufferWriter
    from nightowl.checker import FrameChecker
    from nightowl.drain.supervisor import DrainSupervisor
    from nightowl.dsn import mask_dsn
    from nightowl.ingest import IngestFactory
    from nightowl.listen import ListenerService, with_backlog
    from nightowl.metrics import Metrics
    from nightowl.service import NightowlService
    from nightowl.wire import token_hash

    dsn, workers, token = options["dsn"], options["drain-workers"], options["token"]
    buffer_path = os.path.abspath(options["buffer"])
    dashboard_endpoint = options["dashboard"]
    password = dashboard_password(options) if dashboard_endpoint else None  # refuses first

    metrics = Metrics(reactor)
    forward_queue = None
    if options["forward"]:    # --forward: a queue in the buffer, filled in the payload's commit
        from nightowl.buffer.forwardq import ForwardQueue
        forward_queue = ForwardQueue(options["forward-max-rows"], options["forward-max-bytes"])
    buffer = BufferWriter(buffer_path, reactor=reactor, max_queue=options["max-queue"],
                          max_pending=options["max-pending"], sync=options["buffer-sync"],
                          max_queue_bytes=options["max-queue-bytes"],
                          forward_queue=forward_queue)
    checker = FrameChecker(reactor, token_hash(token) if token is not None else None,
                           max_inflated_bytes=options["max-inflated-bytes"],
                           max_bytes=options["max-check-bytes"])
    factory = IngestFactory(buffer, metrics, token=token,
                            max_frame_bytes=options["max-frame-bytes"],
                            max_inflated_bytes=options["max-inflated-bytes"],
                            frame_timeout=options["frame-timeout"], reactor=reactor,
                            checker=checker, forward=forward_queue is not None)
    if options.get("reuse-port"):   # one of several ingest processes shares the port
        from nightowl.reuseport import ReusePortService
        ingest = ReusePortService(with_backlog(options["listen"]), factory, reactor=reactor)
    elif options["listen"].split(":", 1)[0].lower() in ("tcp", "tcp6"):
        # TCP: served at accept time where the frame is whole (nightowl.fastaccept)
        from nightowl.fastaccept import IngestPortService
        ingest = IngestPortService(with_backlog(options["listen"]), factory, reactor=reactor)
    else:
        ingest = ListenerService(with_backlog(options["listen"]), factory, reactor, name="ingest")
    supervisor = DrainSupervisor(
        buffer, metrics, dsn=dsn, workers=workers, batch_size=options["batch-size"],
        batch_bytes=options["batch-bytes"], environment=options["environment"],
        migrate=not options["no-migrate"], worker_timeout=options["worker-timeout"],
        reactor=reactor)

    forward = None
    if forward_queue is not None:
        from nightowl.forward.client import Sender, parse_host_port
        from nightowl.forward.service import ForwardService
        host, port = parse_host_port(options["forward"])
        forward = ForwardService(
            buffer, forward_queue, Sender(reactor, host, port, timeout=options["forward-timeout"]),
            options["forward"], reactor=reactor, max_inflight=options["forward-inflight"])

    retention = None
    if dsn:
        from nightowl.retention import RetentionService
        retention = RetentionService(
            dsn, options["retention-days"], reactor=reactor,
            # the supervisor's maintenance child ensures partitions while workers run
            ensure=workers == 0,
            rollup_days=(options["rollup-retention-minutes"], options["rollup-retention-hours"],
                         options["rollup-retention-days"]),
            alert_days=options["alert-retention-days"])

    health = None
    if options["health"]:
        from nightowl.health import HealthService
        health = HealthService(
            options["health"], metrics=metrics, buffer=buffer, drain=supervisor,
            dsn_configured=bool(dsn), workers_configured=workers,
            retention=retention.figures if retention is not None else None,
            forward=forward.figures if forward is not None else None, reactor=reactor)

    alerts = None
    if dsn and options["alerts"] == "on":
        from nightowl.alerts.dispatcher import AlertDispatcher
        alerts = AlertDispatcher(
            dsn, metrics=metrics, reactor=reactor, poll_interval=options["alerts-poll"],
            send_timeout=options["alerts-timeout"], max_age=options["alerts-retry-for"],
            health_hold=options["health-alert-hold"],
            health_every=options["health-alert-every"])
        if health is not None:
            health.status_observers.append(alerts.health_alerts.observe)

    dashboard = None
    if dashboard_endpoint and dsn:
        from nightowl.dashboard.service import DashboardService
        dashboard = DashboardService(
            dashboard_endpoint, dsn, password=password,
            health_status=health.status if health is not None else None, reactor=reactor)

    # hour/day rollups derived from the drain's minutes (nightowl.rollups.derive)
    rollups = None
    if dsn:
        from nightowl.rollups.service import DeriveService
        rollups = DeriveService(dsn, reactor=reactor)

    drain_summary = ("{} workers into {}".format(workers, mask_dsn(dsn)) if dsn else
                     "off: buffer-only mode, no --dsn / NIGHTOWL_DSN (payloads stay in the "
                     "buffer)")
    return NightowlService(
        buffer=buffer, ingest=ingest, listen=options["listen"],
        token_enforced=token is not None, drain_summary=drain_summary, reactor=reactor,
        health=health, retention=retention, supervisor=supervisor, checker=checker,
        alerts=alerts, dashboard=dashboard, rollups=rollups, forward=forward)


def dashboard_password(options):
    """
    The dashboard password (file first, then NIGHTOWL_DASHBOARD_PASSWORD), or
    None.  Raises SystemExit with one line when the file cannot be read or
    when the dashboard would listen off loopback without a password.
    """
    from nightowl.dashboard.endpoint import is_loopback
    password, path = options.get("dashboard-password"), options["dashboard-password-file"]
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise SystemExit("nightowl: --dashboard-password-file {}: {}".format(
                path, e.strerror or e))
        if not password:
            raise SystemExit("nightowl: --dashboard-password-file {}: the first line is "
                             "empty".format(path))
    if password is None and not is_loopback(options["dashboard"]):
        raise SystemExit(
            "nightowl: refusing to serve the dashboard on {} without a password: set "
            "--dashboard-password-file or NIGHTOWL_DASHBOARD_PASSWORD, or listen on "
            "127.0.0.1".format(options["dashboard"]))
    return password


def parse(argv=(), environ=None, exit_on_error=False):
    """
    Parse an argument list the way twistd does; for .tac files and tests.
    Raises ``UsageError``; with ``exit_on_error`` (a .tac) a bad value ends
    the process with one line instead, as ``twistd nightowl`` does.
    """
    options = Options(environ=environ, exit_on_error=exit_on_error)
    options.parseOptions(list(argv))
    return options
