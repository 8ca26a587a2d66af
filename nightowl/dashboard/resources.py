"""
The dashboard's HTTP surface (``twisted.web.resource``): routing, security
headers, the session cookie, login / logout, the CSRF check on every POST,
the Host check, static files, and the plumbing that runs a page's query on
the pool and flattens its template.

Routes (all GET unless said):
  /                       overview            /requests, /queries, /jobs,
  /<kind>/group?key=&target=  one group       /outgoing, /cache, /commands,
  /issues, /issues/<id>   issues              /scheduled
  POST /issues/<id>/status   resolve / ignore / reopen (CSRF)
  /trace/<uuid>[?at=]     one trace or job execution (at: when, Unix s)
  /login (GET, POST), POST /logout, /static/<file>
"""

import datetime
import uuid
from importlib import resources as package_files

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import flattenString

from nightowl.dashboard import data
from nightowl.dashboard.views import issues as issue_views
from nightowl.dashboard.views import kinds, login, overview, trace
from nightowl.dashboard.views.layout import DEFAULT_RANGE, RANGES, Context

CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = (
    (b"Content-Security-Policy", CSP.encode("ascii")),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cache-Control", b"no-store"),
)
COOKIE = b"nightowl_session"
STATIC = {"style.css": b"text/css; charset=utf-8",
          "refresh.js": b"text/javascript; charset=utf-8"}
#: Host names accepted when no login is required (DNS-rebinding guard)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _static_files():
    root = package_files.files("nightowl.dashboard") / "static"
    return dict((name, (root / name).read_bytes()) for name in STATIC)


def arg(request, name, limit=500):
    values = request.args.get(name.encode("ascii")) or [b""]
    text = values[0].decode("utf-8", "replace").strip()
    return text[:limit] or None


def _host_name(request):
    host = (request.getHeader(b"host") or b"").decode("latin-1").strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


class DashboardResource(Resource):
    """The whole dashboard as one leaf resource (it routes by itself)."""

    isLeaf = True
    log = Logger()

    def __init__(self, auth, run, clock, health_status=None, allowed_hosts=None):
        """
        `run(fn, *args)`: call fn(conn, *args) off the reactor, a Deferred.
        `clock`: has seconds() (the reactor).  `health_status()`: the agent's
        /status document, or None.  `allowed_hosts`: Host names to accept,
        None for any.
        """
        Resource.__init__(self)
        self.auth = auth
        self.run = run
        self.clock = clock
        self.health_status = health_status
        self.allowed_hosts = allowed_hosts
        self.static = _static_files()

    # -- the front door ----------------------------------------------------------

    def render(self, request):
        # a page answered after the browser left must not be written
        request.nightowl_gone = gone = []
        request.notifyFinish().addErrback(gone.append)
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        if self.allowed_hosts is not None and _host_name(request) not in self.allowed_hosts:
            return self._plain(request, 421, "Misdirected request",
                               "This dashboard answers to localhost only.")
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD", "POST"):
            request.setHeader(b"Allow", b"GET, HEAD, POST")
            return self._plain(request, 405, "Method not allowed", "Use GET or POST.")
        if parts[:1] == ["static"] and len(parts) == 2 and parts[1] in STATIC:
            request.setHeader(b"Content-Type", STATIC[parts[1]])
            request.setHeader(b"Cache-Control", b"max-age=3600")
            return self.static[parts[1]]
        now = self.clock.seconds()
        session = self._session(request, now)
        if method == "POST" and not self.auth.csrf_ok(session, arg(request, "csrf")):
            return self._plain(request, 403, "Forbidden",
                               "This form has expired or did not come from this dashboard. "
                               "Reload the page and try again.")
        if parts == ["login"]:
            return self._login(request, session, method, now)
        if parts == ["logout"] and method == "POST":
            self.auth.logout(session)
            self._set_cookie(request, b"", expire=True)
            return self._redirect(request, b"/login")
        if self.auth.required and not session.authenticated:
            if method == "POST":
                return self._plain(request, 403, "Forbidden", "Log in first.")
            return self._redirect(request, b"/login")
        if method == "POST":
            return self._post(request, parts, session)
        return self._get(request, parts, session, now)

    def _session(self, request, now):
        sid = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        session, created = self.auth.session(sid, now)
        if created:
            self._set_cookie(request, session.sid.encode("ascii"))
        return session

    def _set_cookie(self, request, value, expire=False):
        # Secure only when this very connection is TLS: behind a TLS proxy the
        # agent cannot know, so the README says to use an SSH tunnel instead.
        request.addCookie(COOKIE, value, path=b"/", httpOnly=True, sameSite="strict",
                          secure=request.isSecure(),
                          max_age=b"0" if expire else None)

    def _login(self, request, session, method, now):
        if not self.auth.required or session.authenticated:
            return self._redirect(request, b"/")
        if method != "POST":
            return self._template(request, login.login(session.csrf))
        client = request.getClientAddress()
        client = getattr(client, "host", None) or str(client)
        wait = self.auth.login_retry_after(client, now)
        if wait:
            request.setHeader(b"Retry-After", str(wait).encode("ascii"))
            self.log.warn("dashboard login rate limited for {client}", client=client)
            return self._template(request, login.login(
                session.csrf, "Too many wrong passwords: try again in {} s.".format(wait)), 429)
        fresh = self.auth.login(session, client, arg(request, "password", 1000), now)
        if fresh is None:
            self.log.warn("dashboard login failed from {client}", client=client)
            return self._template(request, login.login(session.csrf, "Wrong password."), 401)
        self._set_cookie(request, fresh.sid.encode("ascii"))
        return self._redirect(request, b"/")

    # -- pages ----------------------------------------------------------------------

    def _context(self, request, parts, session, now):
        range_name = arg(request, "range")
        if range_name not in dict(RANGES):
            range_name = DEFAULT_RANGE
        until = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        scope = data.Scope(until - dict(RANGES)[range_name], until, arg(request, "env", 200))
        ctx = Context("/" + "/".join(parts), range_name, scope.environment, session.csrf,
                      logout=self.auth.required, until=until)
        return ctx, scope

    def _get(self, request, parts, session, now):
        ctx, scope = self._context(request, parts, session, now)
        head = parts[0] if parts else ""
        if not parts:
            health = self.health_status() if self.health_status is not None else None
            return self._page(request, ctx, data.overview, (scope,),
                              lambda d: overview.render(ctx, d, health))
        if head in kinds.KIND_PAGES and len(parts) == 1:
            kind = kinds.KIND_PAGES[head][0]
            return self._page(request, ctx, data.kind_parts(kind, scope), (),
                              lambda d: kinds.render_kind(ctx, head, d))
        if head in kinds.KIND_PAGES and parts[1:] == ["group"]:
            key, target = arg(request, "key", 2000), arg(request, "target", 2000)
            if key is None:
                return self._not_found(request)
            return self._page(request, ctx, data.group_parts(kinds.KIND_PAGES[head][0], scope,
                                                             key), (),
                              lambda d: kinds.render_group(ctx, head, target, d))
        if parts == ["issues"]:
            status = arg(request, "status")
            status = status if status in issue_views.STATUSES else None
            type_ = arg(request, "type")
            type_ = type_ if type_ in issue_views.TYPES else None
            return self._page(request, ctx, data.issues_list, (scope, status, type_),
                              lambda d: issue_views.render_list(ctx, d, status, type_))
        if head == "issues" and len(parts) == 2 and _issue_id(parts[1]):
            return self._page(request, ctx, data.issue_page, (_issue_id(parts[1]), scope),
                              lambda d: issue_views.render_issue(ctx, d))
        if head == "trace" and len(parts) == 2 and _uuid(parts[1]):
            trace_id = _uuid(parts[1])
            return self._page(request, ctx, data.trace, (trace_id, _epoch(arg(request, "at"))),
                              lambda d: trace.render(ctx, trace_id, d))
        return self._not_found(request)

    def _post(self, request, parts, session):
        if (len(parts) == 3 and parts[0] == "issues" and parts[2] == "status"
                and _issue_id(parts[1])):
            issue_id = _issue_id(parts[1])
            status = arg(request, "status")
            if status not in issue_views.STATUSES:
                return self._plain(request, 400, "Bad request", "Unknown status.")
            d = self.run(data.change_issue_status, issue_id, status)
            back = "/issues/{}".format(issue_id).encode("ascii")
            d.addCallback(lambda _: self._redirect(request, back, finish=True))
            d.addErrback(self._failed, request, "issue status")
            return NOT_DONE_YET
        return self._not_found(request)

    def _page(self, request, ctx, fetch, args, view):
        if isinstance(fetch, data.Parts):
            d = self._parts(fetch)
        else:
            d = self.run(fetch, *args)

        def rendered(result):
            if result is None:
                return self._finish(request, login.error("Not found", "No such thing here."), 404)
            if isinstance(result, dict):
                ctx.environments = result.get("environments") or []
            return self._finish(request, view(result))
        d.addCallback(rendered)
        d.addErrback(self._failed, request, ctx.path)
        return NOT_DONE_YET

    def _parts(self, parts):
        """Run a page's parts at once on the pool; one dict, or the first failure."""
        def merged(results):
            out = {}
            for _ok, part in results:
                out.update(part)
            return out

        def first(failure):
            failure.trap(defer.FirstError)
            return failure.value.subFailure
        d = defer.DeferredList([self.run(fn, *args) for fn, args in parts],
                               fireOnOneErrback=True, consumeErrors=True)
        return d.addCallbacks(merged, first)

    # -- writing responses -------------------------------------------------------------

    def _finish(self, request, tag, code=200):
        d = flattenString(None, tag)

        def write(body):
            if _gone(request):
                return
            request.setResponseCode(code)
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            request.write(b"<!DOCTYPE html>\n" + body)
            request.finish()
        return d.addCallback(write)

    def _failed(self, failure, request, what):
        if failure.check(LookupError):
            return self._finish(request, login.error("Not found", "No such issue."), 404)
        if failure.check(ValueError):
            return self._finish(request, login.error("Bad request", failure.getErrorMessage()), 400)
        self.log.failure("dashboard page {what} failed", failure, what=what)
        return self._finish(request, login.error(
            "Something went wrong", "The page could not be built ({}); the agent's log has "
            "the details.".format(failure.type.__name__)), 500)

    def _template(self, request, tag, code=200):
        self._finish(request, tag, code)
        return NOT_DONE_YET

    def _plain(self, request, code, title, message):
        return self._template(request, login.error(title, message), code)

    def _not_found(self, request):
        return self._plain(request, 404, "Not found", "No such page.")

    def _redirect(self, request, location, finish=False):
        request.setResponseCode(303)
        request.setHeader(b"Location", location)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if finish:
            if not _gone(request):
                request.write(b"see " + location)
                request.finish()
            return None
        return b"see " + location


def _gone(request):
    return bool(request.finished or getattr(request, "nightowl_gone", None))


def _issue_id(text):
    if text.isdigit() and len(text) < 19:
        return int(text)
    return None


def _epoch(text):
    """A link's ``at`` (Unix seconds) as an aware datetime, None if absent or odd."""
    if not text or not text.isdigit() or len(text) > 11:
        return None
    return datetime.datetime.fromtimestamp(int(text), datetime.timezone.utc)


def _uuid(text):
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None
