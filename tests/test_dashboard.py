"""
The dashboard without sockets: sessions, the login rate limit, CSRF, the
security headers and the Host check on a real twisted.web Request over a
DummyChannel; the loopback rule of the tap; SVG charts flattened with
hostile labels.
"""

import datetime
import pytest
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.template import flattenString
from twisted.web.test.requesthelper import DummyChannel

from nightowl import tap
from nightowl.dashboard import charts, data
from nightowl.dashboard.auth import Auth, RateLimiter
from nightowl.dashboard.endpoint import is_loopback
from nightowl.dashboard.resources import COOKIE, CSP, LOOPBACK_HOSTS, DashboardResource


class FakeRun:
    """Stands in for the pool: records each call, answers with `result`."""

    def __init__(self, result=None):
        self.calls = []
        self.result = result

    def __call__(self, fn, *args):
        self.calls.append((fn, args))
        return defer.succeed(self.result)


def request(resource, method, path, args=None, cookie=None, host=b"127.0.0.1:2410"):
    channel = DummyChannel()
    req = Request(channel)
    req.method = method
    req.uri = req.path = path
    req.prepath = []
    req.postpath = path.split(b"?")[0].split(b"/")[1:]
    req.args = dict((k.encode(), [v.encode()]) for (k, v) in (args or {}).items())
    req.requestHeaders.setRawHeaders(b"host", [host])
    if cookie:
        req.received_cookies = {COOKIE: cookie}
    body = resource.render(req)
    if body is not NOT_DONE_YET:
        req.write(body)
        req.finish()
    req.output = channel.transport.written.getvalue()
    return req


def cookie_of(req):
    for line in req.cookies:
        if line.startswith(COOKIE + b"="):
            return line
    return None


def sid(req):
    return cookie_of(req).split(b";")[0].split(b"=", 1)[1]


class Base(SynchronousTestCase):
    password = "correct horse"

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.auth = Auth(self.password)
        self.run = FakeRun({"issues": [], "counts": {}, "environments": []})
        self.resource = DashboardResource(self.auth, self.run, self.clock,
                                          allowed_hosts=None if self.password else LOOPBACK_HOSTS)

    def session(self):
        """A logged-in session: (cookie value, csrf token)."""
        first = request(self.resource, b"GET", b"/login")
        anon = sid(first)
        csrf = self.auth.session(anon.decode(), self.clock.seconds())[0].csrf
        done = request(self.resource, b"POST", b"/login",
                       {"password": self.password or "", "csrf": csrf}, cookie=anon)
        fresh = sid(done) if cookie_of(done) else anon
        return fresh, self.auth.session(fresh.decode(), self.clock.seconds())[0].csrf


class LoginTests(Base):
    def test_pages_need_a_login_and_headers_are_set(self):
        req = request(self.resource, b"GET", b"/")
        self.assertEqual(req.code, 303)
        self.assertEqual(req.responseHeaders.getRawHeaders(b"location"), [b"/login"])
        self.assertEqual(req.responseHeaders.getRawHeaders(b"content-security-policy"),
                         [CSP.encode()])
        for directive in ("default-src 'none'", "style-src 'self'", "script-src 'self'",
                          "form-action 'self'", "frame-ancestors 'none'", "img-src 'self' data:"):
            self.assertIn(directive, CSP)
        self.assertEqual(req.responseHeaders.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        self.assertEqual(req.responseHeaders.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
        self.assertEqual(self.run.calls, [])

    def test_cookie_is_httponly_samesite_strict(self):
        line = cookie_of(request(self.resource, b"GET", b"/login")).lower()
        self.assertIn(b"httponly", line)
        self.assertIn(b"samesite=strict", line)
        self.assertNotIn(b"secure", line.replace(b"samesite", b""))

    def test_login_replaces_the_session_and_shows_pages(self):
        cookie, csrf = self.session()
        self.assertEqual(len(cookie), 43)
        req = request(self.resource, b"GET", b"/issues", cookie=cookie)
        self.assertEqual(req.code, 200)
        self.assertEqual(self.run.calls[0][0], data.issues_list)

    def test_wrong_passwords_are_rate_limited_per_client(self):
        first = request(self.resource, b"GET", b"/login")
        anon = sid(first)
        csrf = self.auth.session(anon.decode(), self.clock.seconds())[0].csrf
        codes = []
        for _ in range(6):
            req = request(self.resource, b"POST", b"/login", {"password": "nope", "csrf": csrf},
                          cookie=anon)
            codes.append(req.code)
        self.assertEqual(codes, [401] * 5 + [429])
        self.assertTrue(0 < int(req.responseHeaders.getRawHeaders(b"retry-after")[0]) <= 60)
        # even the right password is not checked while limited
        right = request(self.resource, b"POST", b"/login",
                        {"password": self.password, "csrf": csrf}, cookie=anon)
        self.assertEqual(right.code, 429)
        self.clock.advance(61)
        right = request(self.resource, b"POST", b"/login",
                        {"password": self.password, "csrf": csrf}, cookie=anon)
        self.assertEqual(right.code, 303)

    def test_login_without_csrf_is_refused(self):
        req = request(self.resource, b"POST", b"/login", {"password": self.password})
        self.assertEqual(req.code, 403)


class CsrfTests(Base):
    def test_post_without_or_with_a_wrong_token_is_403(self):
        cookie, csrf = self.session()
        for args in ({"status": "resolved"}, {"status": "resolved", "csrf": csrf[:-1] + "x"}):
            req = request(self.resource, b"POST", b"/issues/7/status", args, cookie=cookie)
            self.assertEqual(req.code, 403)
        self.assertEqual(self.run.calls, [])

    def test_token_of_another_session_is_refused(self):
        cookie, _csrf = self.session()
        _other, other_csrf = self.session()
        req = request(self.resource, b"POST", b"/issues/7/status",
                      {"status": "resolved", "csrf": other_csrf}, cookie=cookie)
        self.assertEqual(req.code, 403)

    def test_post_with_the_token_changes_the_status(self):
        cookie, csrf = self.session()
        req = request(self.resource, b"POST", b"/issues/7/status",
                      {"status": "ignored", "csrf": csrf}, cookie=cookie)
        self.assertEqual(req.code, 303)
        self.assertEqual(req.responseHeaders.getRawHeaders(b"location"), [b"/issues/7"])
        self.assertEqual(self.run.calls, [(data.change_issue_status, (7, "ignored"))])

    def test_bad_status_is_400(self):
        cookie, csrf = self.session()
        req = request(self.resource, b"POST", b"/issues/7/status",
                      {"status": "deleted", "csrf": csrf}, cookie=cookie)
        self.assertEqual(req.code, 400)
        self.assertEqual(self.run.calls, [])


class NoPasswordTests(Base):
    password = None

    def test_loopback_without_password_shows_pages_but_still_checks_csrf(self):
        req = request(self.resource, b"GET", b"/issues")
        self.assertEqual(req.code, 200)
        cookie = sid(req)
        post = request(self.resource, b"POST", b"/issues/1/status", {"status": "resolved"},
                       cookie=cookie)
        self.assertEqual(post.code, 403)

    def test_other_host_names_are_refused(self):
        # DNS rebinding: evil.example resolving to 127.0.0.1 must not read pages
        req = request(self.resource, b"GET", b"/", host=b"evil.example:2410")
        self.assertEqual(req.code, 421)
        for host in (b"localhost:8080", b"127.0.0.1", b"[::1]:2410"):
            self.assertEqual(request(self.resource, b"GET", b"/issues", host=host).code, 200)


def test_rate_limiter_window():
    limiter = RateLimiter(3, window=60)
    for t in (0, 1, 2):
        assert limiter.retry_after("a", t) == 0
        limiter.failed("a", t)
    assert limiter.retry_after("a", 3) == 57
    assert limiter.retry_after("b", 3) == 0
    assert limiter.retry_after("a", 59.5) == 1
    assert limiter.retry_after("a", 60) == 0


def test_global_limit_stops_a_spray_from_many_addresses():
    auth = Auth("pw", per_client=5, global_limit=4)
    session, _ = auth.session(None, 0)
    for i in range(4):
        assert auth.login(session, "10.0.0.{}".format(i), "wrong", 1) is None
    assert auth.login_retry_after("10.9.9.9", 2) == 59


@pytest.mark.parametrize("desc, loopback", [
    ("tcp:2410:interface=127.0.0.1", True), ("tcp:2410:interface=localhost", True),
    ("tcp6:2410:interface=\\:\\:1", True), ("tcp:2410", False),
    ("tcp:2410:interface=0.0.0.0", False), ("tcp:2410:interface=10.1.2.3", False),
    ("unix:/run/nightowl.sock", True), ("systemd:domain=INET:index=0", False), ("2410", False),
])
def test_loopback_rule(desc, loopback):
    assert is_loopback(desc) is loopback


def test_tap_refuses_an_open_dashboard_with_one_line(tmp_path):
    opts = tap.parse(["--dashboard", "tcp:2410:interface=0.0.0.0", "--buffer",
                      str(tmp_path / "b"), "--health", "none", "--dsn", "host=x"], environ={})
    with pytest.raises(SystemExit) as e:
        tap.makeService(opts)
    assert str(e.value).startswith("nightowl: refusing to serve the dashboard on "
                                   "tcp:2410:interface=0.0.0.0 without a password")
    assert "\n" not in str(e.value)


def test_tap_password_from_file_or_environment(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    opts = tap.parse(["--dashboard", "tcp:0", "--dashboard-password-file", str(secret)],
                     environ={})
    assert tap.dashboard_password(opts) == "s3cret"
    opts = tap.parse(["--dashboard", "tcp:0"], environ={"NIGHTOWL_DASHBOARD_PASSWORD": "envpw"})
    assert tap.dashboard_password(opts) == "envpw"
    opts = tap.parse(["--dashboard-password-file", str(tmp_path / "missing")], environ={})
    with pytest.raises(SystemExit) as e:
        tap.dashboard_password(opts)
    assert "No such file" in str(e.value) and "\n" not in str(e.value)
    assert tap.parse([], environ={})["dashboard"] == "tcp:2410:interface=127.0.0.1"
    assert tap.parse(["--dashboard", "none"], environ={})["dashboard"] is None


def _flat(tag):
    out = []
    flattenString(None, tag).addCallback(out.append)
    return out[0].decode()


def test_svg_charts_escape_hostile_labels():
    hostile = '</svg><script>window.__pwned=1</script>"><img src=x onerror=alert(1)>'
    t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    html = _flat(charts.line_chart(hostile, [t, t + datetime.timedelta(minutes=1)],
                                   [(hostile, "s-count", [1.0, None])], area=True))
    html += _flat(charts.bar_chart(hostile, [(hostile, 3.0, "/x?a=" + hostile)]))
    html += _flat(charts.timeline(hostile, [("query", hostile, 0, 10)], 0, 10))
    assert "<script" not in html and "<img" not in html and "</svg><script" not in html
    assert "&lt;/svg&gt;&lt;script&gt;" in html
    assert html.count("<svg") == html.count("</svg>") == 3


def test_the_rate_of_the_bucket_still_running_is_over_its_elapsed_minutes():
    from nightowl.dashboard.views.overview import per_minute
    hour = datetime.timedelta(hours=1)
    t0 = datetime.datetime(2026, 12, 3, 10, tzinfo=datetime.timezone.utc)
    series = [{"bucket": t0 + k * hour, "count": 6000} for k in range(3)]
    series[2]["count"] = 1500       # 15 minutes into the current hour, at the same pace
    rates, minutes = per_minute(series, until=t0 + 2 * hour + datetime.timedelta(minutes=15))
    assert minutes == 60 and rates == [100.0, 100.0, 100.0]
    # without the range's end the last bucket reads as a dip (the old chart)
    assert per_minute(series)[0][2] == 25.0
    # its first seconds say too little to draw
    assert per_minute(series, until=t0 + 2 * hour + datetime.timedelta(seconds=5))[0][2] is None


def test_overview_chart_labels_the_partial_bucket():
    from nightowl.dashboard.views.overview import latency_charts
    t0 = datetime.datetime(2026, 12, 3, 10, tzinfo=datetime.timezone.utc)
    series = [{"bucket": t0 + datetime.timedelta(hours=k), "count": 60, "errors": 0,
               "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0} for k in range(2)]
    html = _flat(latency_charts(series, "Requests", t0 + datetime.timedelta(minutes=90)))
    assert "the last one so far" in html
