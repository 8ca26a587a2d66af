"""
Configuration (one source of truth) and the twistd entry point.

Every option can also be given as a ``NIGHTOWL_*`` environment variable; the
command line wins.  Values from either source go through the same coerce
functions in ``postOptions`` so a bad value stops startup with one line.
"""

import os
import re

from twisted.python import usage

from nightowl import __version__

DEFAULT_LISTEN = "tcp:2407:interface=127.0.0.1"
DEFAULT_HEALTH = "tcp:2409:interface=127.0.0.1"
DEFAULT_DASHBOARD = "tcp:2410:interface=127.0.0.1"
#: where contrib/nightowl.service and supervisord.conf keep it; created if missing
DEFAULT_BUFFER = "/var/lib/nightowl/buffer.sqlite"


def _int_at_least(name, minimum):
    def coerce(value):
        try:
            number = int(str(value).strip())
        except ValueError:
            raise usage.UsageError(
                "--{}: expected a whole number, got {!r}".format(name, value))
        if number < minimum:
            raise usage.UsageError("--{}: must be {}, got {}".format(
                name, "greater than 0" if minimum == 1 else "{} or more".format(minimum),
                number))
        return number
    return coerce


def _positive_int(name):
    return _int_at_least(name, 1)


def _non_negative_int(name):
    return _int_at_least(name, 0)


def _positive_float(name):
    def coerce(value):
        try:
            number = float(str(value).strip())
        except ValueError:
            raise usage.UsageError(
                "--{}: expected a number of seconds, got {!r}".format(name, value))
        if not number > 0:
            raise usage.UsageError(
                "--{}: must be greater than 0, got {}".format(name, value))
        return number
    return coerce


def _size(name):
    """Bytes, with an optional K/M/G suffix (powers of 1024)."""
    def coerce(value):
        text = str(value).strip().upper().rstrip("B").rstrip("I")
        factor = 1
        for suffix, mult in (("K", 1024), ("M", 1024 ** 2), ("G", 1024 ** 3)):
            if text.endswith(suffix):
                text, factor = text[:-1], mult
                break
        try:
            number = int(float(text) * factor)
        except ValueError:
            raise usage.UsageError(
                "--{}: expected a size like 10485760 or 10M, got {!r}".format(name, value))
        if number <= 0:
            raise usage.UsageError("--{}: must be greater than 0".format(name))
        return number
    return coerce


def _strports(name, allow_none=False):
    def coerce(value):
        text = str(value).strip()
        if allow_none and text.lower() in ("none", "off", ""):
            return None
        if not text or ":" not in text and not text.isdigit():
            raise usage.UsageError(
                "--{}: expected a strports endpoint like tcp:2407:interface=127.0.0.1, "
                "got {!r}".format(name, value))
        if text.isdigit():
            text = "tcp:" + text
        _check_endpoint(name, text)
        return text
    return coerce


def _check_endpoint(name, text):
    """A strports description that parses, with a port in 0-65535 (no I/O but ssl's key file)."""
    kind, _, rest = text.partition(":")
    if kind.lower() in ("tcp", "tcp6", "ssl"):
        parts = re.split(r"(?<!\\):", rest)
        ports = [p[5:] for p in parts if p.startswith("port=")] or [
            p for p in parts if "=" not in p][:1]
        port = ports[0] if ports else ""
        if not port.strip().isdigit():
            raise usage.UsageError("--{}: expected a port number in {!r}".format(name, text))
        if not 0 <= int(port) <= 65535:
            raise usage.UsageError("--{}: port {} is out of range (0-65535)".format(
                name, int(port)))
    from twisted.internet import endpoints
    try:
        endpoints.serverFromString(None, text)
    except Exception as e:
        raise usage.UsageError("--{}: {!r} is not a valid endpoint: {}".format(
            name, text, str(e).splitlines()[0] if str(e) else e.__class__.__name__))


def _dsn(name):
    """A DSN libpq can parse (checked without connecting; never echoed: it may hold a password)."""
    def coerce(value):
        text = str(value).strip()
        if not text:
            return text
        from psycopg2.extensions import parse_dsn
        try:
            parse_dsn(text)
        except Exception:
            raise usage.UsageError(
                "--{}: not a PostgreSQL connection string (expected \"host=... dbname=... "
                "user=...\" or postgresql://user@host/dbname)".format(name))
        return text
    return coerce


def _choice(name, choices):
    def coerce(value):
        text = str(value).strip().lower()
        if text not in choices:
            raise usage.UsageError("--{}: expected one of {}, got {!r}".format(
                name, "/".join(choices), value))
        return text
    return coerce


def _text(name):
    def coerce(value):
        return str(value)
    return coerce


# (long name, short, default, env var, coerce, help)
PARAMETERS = [
    ("listen", "l", DEFAULT_LISTEN, "NIGHTOWL_LISTEN", _strports("listen"),
     "Ingest endpoint (twisted strports)."),
    ("buffer", "b", DEFAULT_BUFFER, "NIGHTOWL_BUFFER", _text("buffer"),
     "Path of the SQLite buffer file."),
    ("token", "t", None, "NIGHTOWL_TOKEN", _text("token"),
     "Nightwatch token; frames must carry its hash. Unset: any token hash is accepted. "
     "Falls back to NIGHTWATCH_TOKEN."),
    ("max-frame-bytes", None, 10 * 1024 * 1024, "NIGHTOWL_MAX_FRAME_BYTES",
     _size("max-frame-bytes"), "Largest frame accepted on the wire."),
    ("max-inflated-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_MAX_INFLATED_BYTES",
     _size("max-inflated-bytes"), "Largest payload a gzip frame may inflate to."),
    ("frame-timeout", None, 10.0, "NIGHTOWL_FRAME_TIMEOUT", _positive_float("frame-timeout"),
     "Seconds a connection may take to deliver its frame."),
    ("buffer-sync", None, "normal", "NIGHTOWL_BUFFER_SYNC", _choice("buffer-sync", ("normal", "full")),
     "SQLite synchronous mode: 'normal' survives an agent crash; 'full' also survives "
     "power loss, at a throughput cost."),
    ("max-pending", None, 1000000, "NIGHTOWL_MAX_PENDING", _positive_int("max-pending"),
     "Back-pressure: refuse new payloads while more than this many rows wait in the buffer."),
    ("max-queue", None, 20000, "NIGHTOWL_MAX_QUEUE", _positive_int("max-queue"),
     "Back-pressure: refuse new payloads while this many wait for the writer thread."),
    ("max-queue-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_MAX_QUEUE_BYTES",
     _size("max-queue-bytes"),
     "Back-pressure: refuse new payloads while this many (inflated) bytes wait for the "
     "writer thread."),
    ("max-check-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_MAX_CHECK_BYTES",
     _size("max-check-bytes"),
     "Back-pressure: inflated bytes that big and gzip frames may hold while they are "
     "inflated and checked off the writer thread."),
    ("dsn", None, None, "NIGHTOWL_DSN", _dsn("dsn"),
     "PostgreSQL DSN to drain into. Unset: buffer only."),
    ("drain-workers", None, 2, "NIGHTOWL_DRAIN_WORKERS", _non_negative_int("drain-workers"),
     "Number of drain worker processes (0 disables draining)."),
    ("batch-size", None, 5000, "NIGHTOWL_BATCH_SIZE", _positive_int("batch-size"),
     "Payload rows a drain worker claims per batch."),
    ("batch-bytes", None, 64 * 1024 * 1024, "NIGHTOWL_BATCH_BYTES", _size("batch-bytes"),
     "Payload bytes a drain worker claims per batch at most (always at least one payload); "
     "a worker that dies on a claim gets half as many rows, down to one, which is "
     "then quarantined."),
    ("worker-timeout", None, 60.0, "NIGHTOWL_WORKER_TIMEOUT", _positive_float("worker-timeout"),
     "Seconds a drain worker may stay silent (no heartbeat) before it is killed as frozen "
     "and its claim released."),
    ("environment", None, "production", "NIGHTOWL_ENVIRONMENT", _text("environment"),
     "Environment name stamped on every row."),
    ("health", None, DEFAULT_HEALTH, "NIGHTOWL_HEALTH", _strports("health", allow_none=True),
     "Health/metrics HTTP endpoint (strports), or 'none'."),
    ("dashboard", None, DEFAULT_DASHBOARD, "NIGHTOWL_DASHBOARD",
     _strports("dashboard", allow_none=True),
     "Dashboard HTTP endpoint (strports), or 'none'. Needs --dsn. Off loopback it needs a "
     "password."),
    ("dashboard-password-file", None, None, "NIGHTOWL_DASHBOARD_PASSWORD_FILE",
     _text("dashboard-password-file"),
     "File holding the dashboard password (first line). Or set NIGHTOWL_DASHBOARD_PASSWORD. "
     "Unset: no login, allowed on loopback only."),
    ("retention-days", None, 14, "NIGHTOWL_RETENTION_DAYS", _positive_int("retention-days"),
     "Daily partitions older than this are dropped."),
    ("alerts", None, "on", "NIGHTOWL_ALERTS", _choice("alerts", ("on", "off")),
     "'on': send the alerts of the channels in Postgres (needs --dsn); 'off': none."),
    ("alerts-poll", None, 2.0, "NIGHTOWL_ALERTS_POLL", _positive_float("alerts-poll"),
     "Seconds between alert dispatcher rounds (fan-out, claim, send)."),
    ("alerts-timeout", None, 15.0, "NIGHTOWL_ALERTS_TIMEOUT", _positive_float("alerts-timeout"),
     "Seconds one alert send (HTTP or SMTP) may take."),
    ("alerts-retry-for", None, 86400.0, "NIGHTOWL_ALERTS_RETRY_FOR",
     _positive_float("alerts-retry-for"),
     "Seconds a failing alert is retried (with backoff) before it is marked dead."),
    ("health-alert-hold", None, 30.0, "NIGHTOWL_HEALTH_ALERT_HOLD",
     _positive_float("health-alert-hold"),
     "Seconds a health status must hold before it is alerted."),
    ("health-alert-every", None, 600.0, "NIGHTOWL_HEALTH_ALERT_EVERY",
     _positive_float("health-alert-every"),
     "At most one agent-health alert per this many seconds."),
    ("rollup-retention-minutes", None, 7, "NIGHTOWL_ROLLUP_RETENTION_MINUTES",
     _positive_int("rollup-retention-minutes"), "Days of per-minute rollups kept."),
    ("rollup-retention-hours", None, 90, "NIGHTOWL_ROLLUP_RETENTION_HOURS",
     _positive_int("rollup-retention-hours"), "Days of per-hour rollups kept."),
    ("rollup-retention-days", None, 730, "NIGHTOWL_ROLLUP_RETENTION_DAYS",
     _positive_int("rollup-retention-days"), "Days of per-day rollups kept."),
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
    for (long, _short, default, var, coerce, _help) in PARAMETERS:
        if long != name:
            continue
        value = given
        if value is None:
            value = env.get(var)
            if value is None and long == "token":
                value = env.get("NIGHTWATCH_TOKEN")
        return default if value is None else coerce(value)
    raise KeyError(name)


def makeService(options, reactor=None):
    """
    Build the root service from parsed options.
    """
    from nightowl.service import NightowlService
    alerts = None
    if options["dsn"] and options["alerts"] == "on":
        import functools

        from nightowl.alerts.dispatcher import AlertDispatcher
        alerts = functools.partial(
            AlertDispatcher, options["dsn"], poll_interval=options["alerts-poll"],
            send_timeout=options["alerts-timeout"], max_age=options["alerts-retry-for"],
            health_hold=options["health-alert-hold"],
            health_every=options["health-alert-every"])
    root = NightowlService(options, reactor=reactor, alerts=alerts)
    if options["dsn"]:      # hour/day rollups derived from the drain's minutes
        from nightowl.rollups.service import DeriveService
        root.add_service(DeriveService(options["dsn"], reactor=reactor))
    if options["dashboard"]:
        password = dashboard_password(options)      # refuses an open dashboard first
        if options["dsn"]:
            from nightowl.dashboard.service import DashboardService
            health = root.health
            root.add_service(DashboardService(
                options["dashboard"], options["dsn"], password=password,
                health_status=health.status if health is not None else None,
                reactor=reactor))
    return root


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
