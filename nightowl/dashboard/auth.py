"""
Who may see the dashboard: sessions, the password check, CSRF tokens and the
login rate limit.  Pure bookkeeping: time comes in as ``now`` (the reactor's
``seconds()``), nothing here touches a socket or a request.

Model:
- Every browser gets a session (a random 256-bit id in an HttpOnly,
  SameSite=Strict cookie) on its first visit; the session carries a random
  CSRF token that every state-changing form must echo back.
- With a password configured, a session must log in before any page is
  shown; logging in replaces the session id (no fixation) and keeps nothing
  of the anonymous one.  Without a password (allowed on loopback only, see
  ``nightowl.tap``) every session counts as logged in.
- Wrong passwords are limited per client address and globally: after
  ``PER_CLIENT`` failures within ``WINDOW`` seconds from one address (or
  ``GLOBAL`` from all) further attempts get 429 with Retry-After until the
  oldest failure leaves the window.  Attempts refused this way are not
  checked, so they cannot guess.
"""

import collections
import hashlib
import hmac
import secrets

SESSION_IDLE = 12 * 3600.0     # seconds a session lives without a request
MAX_SESSIONS = 10000           # oldest sessions are forgotten beyond this
WINDOW = 60.0
PER_CLIENT = 5
GLOBAL = 30


class Session:
    __slots__ = ("sid", "csrf", "authenticated", "seen")

    def __init__(self, sid, csrf, authenticated, seen):
        self.sid = sid
        self.csrf = csrf
        self.authenticated = authenticated
        self.seen = seen


class RateLimiter:
    """Failures per key within a sliding window."""

    def __init__(self, limit, window=WINDOW):
        self.limit = limit
        self.window = window
        self._failures = collections.defaultdict(collections.deque)

    def _trim(self, key, now):
        times = self._failures.get(key)
        if times is None:
            return ()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return ()
        return times

    def retry_after(self, key, now):
        """Seconds until `key` may try again, or 0 if it may now."""
        times = self._trim(key, now)
        if len(times) < self.limit:
            return 0
        return max(1, int(times[0] + self.window - now + 0.999))

    def failed(self, key, now):
        self._trim(key, now)
        self._failures[key].append(now)
        if len(self._failures) > MAX_SESSIONS:      # bound memory under a spray
            self._failures.pop(next(iter(self._failures)))


def _digest(text):
    return hashlib.sha256(text.encode("utf-8")).digest()


class Auth:
    """Sessions, password and rate limits of one dashboard."""

    def __init__(self, password=None, per_client=PER_CLIENT, global_limit=GLOBAL,
                 window=WINDOW, idle=SESSION_IDLE, max_sessions=MAX_SESSIONS):
        self._password = None if password is None else _digest(password)
        self.idle = idle
        self.max_sessions = max_sessions
        self._sessions = collections.OrderedDict()
        self.per_client = RateLimiter(per_client, window)
        self.everyone = RateLimiter(global_limit, window)

    @property
    def required(self):
        """True when a login is needed to see pages."""
        return self._password is not None

    def _new(self, now, authenticated):
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          authenticated, now)
        self._sessions[session.sid] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def session(self, sid, now):
        """(session, created): the live session named `sid`, or a new anonymous one."""
        session = self._sessions.get(sid) if sid else None
        if session is not None and now - session.seen < self.idle:
            session.seen = now
            self._sessions.move_to_end(session.sid)
            return session, False
        if session is not None:
            del self._sessions[session.sid]
        return self._new(now, authenticated=not self.required), True

    def csrf_ok(self, session, token):
        """Does the form's token belong to this session?"""
        if not token or session is None:
            return False
        return hmac.compare_digest(session.csrf.encode("ascii"), token.encode("utf-8", "replace"))

    def login_retry_after(self, client, now):
        """Seconds `client` must wait before a password is even checked, or 0."""
        return max(self.per_client.retry_after(client, now), self.everyone.retry_after(None, now))

    def login(self, session, client, password, now):
        """
        The logged-in session replacing `session`, or None for a wrong password
        (counted against `client` and against everyone).  The caller checks
        ``login_retry_after`` first.
        """
        if self._password is None:
            return session
        if not hmac.compare_digest(_digest(password or ""), self._password):
            self.per_client.failed(client, now)
            self.everyone.failed(None, now)
            return None
        self.logout(session)
        return self._new(now, authenticated=True)

    def logout(self, session):
        if session is not None:
            self._sessions.pop(session.sid, None)
