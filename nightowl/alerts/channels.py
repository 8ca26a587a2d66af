"""
Alert channel configuration: what a channel of each type needs, how it is
stored (``nightowl_alert_channels``), and how it is shown with its secrets
masked.

Secrets: a webhook's HMAC secret is stored (it must be, to sign); an email
channel stores only the NAME of the environment variable holding the SMTP
password (``password_env``), read at send time by the agent that sends.
Slack and Discord webhook URLs are credentials: shown as ``host/…``.

The functions taking ``conn`` are blocking psycopg2 calls: the CLI calls
them directly, the dispatcher on its own thread pool.
"""

from urllib.parse import urlsplit

TYPES = ("webhook", "slack", "discord", "email")
TLS_MODES = ("starttls", "ssl", "none")
DEFAULT_RATE_LIMIT = 10            # alerts ...
DEFAULT_RATE_WINDOW = 300          # ... per this many seconds, per channel
DEFAULT_SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}

#: events a channel can receive (``events`` NULL = all of them)
EVENTS = ("issue.new", "issue.reopened", "performance.new",
          "health.degraded", "health.critical", "health.recovered")


class ChannelError(ValueError):
    """A channel configuration that cannot work, as one line."""


class Channel:
    """One channel row, as the dispatcher and the senders use it."""

    __slots__ = ("id", "name", "type", "settings", "events", "enabled", "rate_limit",
                 "rate_window")

    def __init__(self, id, name, type, settings, events=None, enabled=True,
                 rate_limit=DEFAULT_RATE_LIMIT, rate_window=DEFAULT_RATE_WINDOW):
        self.id = id
        self.name = name
        self.type = type
        self.settings = dict(settings or {})
        self.events = list(events) if events is not None else None
        self.enabled = enabled
        self.rate_limit = rate_limit
        self.rate_window = rate_window

    def wants(self, event):
        return self.events is None or event in self.events

    def __repr__(self):
        return "<Channel {} ({})>".format(self.name, self.type)


def check_url(url, what="--url"):
    """Only http/https URLs with a host (anything else refused before any I/O)."""
    parts = urlsplit(str(url or ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelError("{}: expected an http:// or https:// URL, got {!r}".format(
            what, redact_url(url)))
    return url


def redact_url(url):
    """``scheme://host[:port]/…``: a Slack/Discord webhook path is the credential."""
    try:
        parts = urlsplit(str(url or ""))
    except ValueError:
        return "<unparseable URL>"
    if not parts.netloc:
        return "<not a URL>"
    host = parts.netloc.rsplit("@", 1)[-1]
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return "{}://{}{}".format(parts.scheme, host, rest)


def parse_hostport(text, tls):
    """``host:port`` (or ``host``: the port follows the TLS mode)."""
    text = str(text or "").strip()
    if not text:
        raise ChannelError("--smtp: expected HOST:PORT")
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, DEFAULT_SMTP_PORTS[tls]
    try:
        number = int(port)
    except ValueError:
        raise ChannelError("--smtp: the port must be a number, got {!r}".format(port))
    if not host or not 0 < number < 65536:
        raise ChannelError("--smtp: expected HOST:PORT, got {!r}".format(text))
    return host.strip("[]"), number


def validate(type, settings):
    """A settings dict fit to store for ``type``; raises ChannelError."""
    if type not in TYPES:
        raise ChannelError("unknown channel type {!r} (expected {})".format(
            type, ", ".join(TYPES)))
    s = dict((k, v) for k, v in (settings or {}).items() if v is not None)
    if type in ("webhook", "slack", "discord"):
        check_url(s.get("url"))
        allowed = ("url", "secret") if type == "webhook" else ("url",)
    else:
        to = s.get("to")
        if isinstance(to, str):
            to = [a.strip() for a in to.split(",") if a.strip()]
        if not to:
            raise ChannelError("--to: at least one recipient address is required")
        for address in to:
            _check_address(address, "--to")
        s["to"] = to
        _check_address(s.get("from") or "", "--from")
        tls = s.get("tls") or "starttls"
        if tls not in TLS_MODES:
            raise ChannelError("--tls: expected one of {}, got {!r}".format(
                "/".join(TLS_MODES), tls))
        s["tls"] = tls
        if not s.get("smtp_host"):
            raise ChannelError("--smtp: expected HOST:PORT")
        s["smtp_port"] = int(s.get("smtp_port") or DEFAULT_SMTP_PORTS[tls])
        if s.get("password_env") and not s.get("user"):
            raise ChannelError("--password-env needs --user")
        env = s.get("password_env")
        if env is not None and (not env or not all(c.isalnum() or c == "_" for c in env)):
            raise ChannelError("--password-env: expected an environment variable NAME, "
                               "not a password")
        allowed = ("to", "from", "smtp_host", "smtp_port", "tls", "user", "password_env",
                   "ca_file")
    extra = set(s) - set(allowed)
    if extra:
        raise ChannelError("settings not used by a {} channel: {}".format(
            type, ", ".join(sorted(extra))))
    return s


def _check_address(address, what):
    text = str(address)
    if ("@" not in text or any(c in text for c in "\r\n<>,;\"' ")
            or len(text) > 254):
        raise ChannelError("{}: {!r} is not an email address".format(what, text))


def masked(channel):
    """The settings to show: secrets as ``***``, webhook URL paths redacted."""
    s = dict(channel.settings)
    if s.get("secret"):
        s["secret"] = "***"
    if "url" in s and channel.type in ("slack", "discord"):
        s["url"] = redact_url(s["url"])
    return s


# -- storage (blocking) -------------------------------------------------------

COLUMNS = ("id, name, type, settings, events, enabled, rate_limit, rate_window_seconds")


def _row(row):
    return Channel(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


def load(conn, enabled_only=True, name=None):
    """[Channel] ordered by name."""
    sql = "SELECT " + COLUMNS + " FROM nightowl_alert_channels WHERE true"
    args = []
    if enabled_only:
        sql += " AND enabled"
    if name is not None:
        sql += " AND name = %s"
        args.append(name)
    with conn.cursor() as cur:
        cur.execute(sql + " ORDER BY name", args)
        return [_row(r) for r in cur.fetchall()]


def add(conn, name, type, settings, events=None, rate_limit=DEFAULT_RATE_LIMIT,
        rate_window=DEFAULT_RATE_WINDOW):
    """Insert a validated channel (one transaction); ChannelError if the name is taken."""
    import psycopg2
    from psycopg2.extras import Json
    name = str(name or "").strip()
    if not name:
        raise ChannelError("--name is required")
    for event in events or ():
        if event not in EVENTS:
            raise ChannelError("unknown event {!r} (expected {})".format(
                event, ", ".join(EVENTS)))
    settings = validate(type, settings)
    try:
        with conn:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO nightowl_alert_channels (name, type, settings, events, "
                    "rate_limit, rate_window_seconds) VALUES (%s, %s, %s, %s, %s, %s) "
                    "RETURNING id", (name, type, Json(settings), list(events) if events else None,
                                     rate_limit, rate_window))
                return cur.fetchone()[0]
    except psycopg2.errors.UniqueViolation:
        raise ChannelError("a channel named {!r} exists already".format(name))


def remove(conn, name):
    """Delete a channel and its delivery rows; False if there was none."""
    with conn:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM nightowl_alert_channels WHERE name = %s", (name,))
            return cur.rowcount > 0
