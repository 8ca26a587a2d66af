"""
The dashboard of a real agent (``twistd -n nightowl --dashboard tcp:0``)
over seeded real Postgres, in a real headless Chromium: every page loads
without a console error and shows the seeded figures; hostile telemetry is
shown as text and runs nothing; resolve / ignore / reopen change the issue
and its activity; a POST without the CSRF token is refused; wrong passwords
are rate limited; an open dashboard without a password refuses to start.

Set NIGHTOWL_SCREENSHOTS=<dir> to save a PNG of every page there.
"""

import http.client
import os
import re
import subprocess
import time
import urllib.parse

import psycopg2
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from nightowl import migrate
from tests.conftest import fetch
from nightowl.bench.agent import TWISTD
from tests.integration.agent import AgentProcess
from tests.integration.browser import Browser
from tests.integration.dashseed import HOSTILE_MESSAGE, HOSTILE_ROUTE, HOSTILE_SQL, seed

DASHBOARD = re.compile(r"nightowl dashboard on [0-9.]+:(\d+)")


def start_agent(tmp_path_factory, dsn, env=None):
    path = str(tmp_path_factory.mktemp("agent") / "buffer.sqlite")
    agent = AgentProcess(path, health=True, env=env, args=[
        "--health", "tcp:0:interface=127.0.0.1", "--dsn", dsn, "--drain-workers", "0",
        "--dashboard", "tcp:0:interface=127.0.0.1"]).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [DASHBOARD.search(line) for line in agent.lines]
        found = [m for m in found if m]
        if found:
            agent.dashboard_port = int(found[0].group(1))
            return agent
        time.sleep(0.05)
    agent.kill()
    raise AssertionError("no dashboard line:\n" + agent.log())


@pytest.fixture(scope="module")
def seeded(pg_dsn):
    migrate.apply(pg_dsn)
    conn = psycopg2.connect(pg_dsn)
    try:
        return seed(conn)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory, pg_dsn, seeded):
    a = start_agent(tmp_path_factory, pg_dsn)
    yield a
    a.stop()


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.quit()


def url(agent, path):
    return "http://127.0.0.1:{}{}".format(agent.dashboard_port, path)


def shot(browser, name):
    where = os.environ.get("NIGHTOWL_SCREENSHOTS")
    if where:
        os.makedirs(where, exist_ok=True)
        # the whole page, not just the first screenful
        height = browser.js("return document.documentElement.scrollHeight")
        browser.driver.set_window_size(1280, max(1000, int(height) + 140))
        try:
            browser.driver.save_screenshot(os.path.join(where, name + ".png"))
        finally:
            browser.driver.set_window_size(1280, 1000)


def wait_js(browser, script, expected=None, timeout=10.0):
    """Poll a script across a page load until it returns `expected` (or anything truthy)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = browser.js("if (document.readyState != 'complete') return null; " + script)
        except WebDriverException:
            value = None          # the page is being replaced
        if (value == expected) if expected is not None else value:
            return value
        time.sleep(0.1)
    return value


def text(browser):
    return browser.js("return document.body.textContent")


def pages(seeded):
    boom = seeded["issues"]["fp-boom"]
    orders = urllib.parse.urlencode({"key": "g-orders|GET|2xx", "target": "/orders"})
    return [
        ("overview", "/", ["Requests", "44", "Slowest routes", "Buffer depth", "Drain lag",
                           "Payment provider failed"]),
        ("requests", "/requests", ["/orders", "39", HOSTILE_ROUTE]),
        ("route", "/requests/group?" + orders, ["Slowest recent", "GET /orders/7", "250 ms"]),
        ("queries", "/queries", ["N+1 candidates", "select * from items where order_id = ?",
                                 HOSTILE_SQL]),
        ("jobs", "/jobs", ["App\\Jobs\\SendReceipt", "42.0 ms"]),
        ("outgoing", "/outgoing", ["pay.example.com", "80.0 ms"]),
        ("cache", "/cache", ["Hit ratio", "75.0%", "redis"]),
        ("commands", "/commands", ["migrate", "1,200 ms"]),
        ("scheduled", "/scheduled", ["php artisan reports:daily", "3,400 ms"]),
        ("issues", "/issues", ["RuntimeException", "Payment provider failed", HOSTILE_MESSAGE]),
        ("issue", "/issues/{}".format(boom), ["Payment provider failed",
                                              "App\\Http\\Controllers\\OrderController->show()",
                                              "u-1@example.com", "Resolve"]),
        ("trace", "/trace/" + seeded["trace"], ["select * from items where order_id = ?",
                                                 "https://pay.example.com/charge", "payment slow",
                                                 "RuntimeException", "SendReceipt"]),
        ("job-trace", "/trace/" + seeded["job_attempt"], ["SendReceipt", "1 job"]),
    ]


def test_every_page_loads_clean_and_shows_the_seeded_figures(agent, browser, seeded):
    for name, path, expected in pages(seeded):
        browser.get(url(agent, path))
        body = text(browser)
        for needle in expected:
            assert needle in body, (name, needle)
        logged = browser.console()
        assert logged == [], (name, logged)
        # the refresh script is the only script; the stylesheet applied
        assert browser.js("return document.scripts.length") == 1, name
        assert browser.js("return getComputedStyle(document.body).margin") == "0px", name
        shot(browser, name)


def test_hostile_telemetry_shows_as_text_and_runs_nothing(agent, browser, seeded):
    hostile_issue = seeded["issues"]["fp-hostile"]
    route = urllib.parse.urlencode({"key": "g-hostile|GET|2xx", "target": HOSTILE_ROUTE})
    checks = [("/", HOSTILE_ROUTE[:40]), ("/requests", HOSTILE_ROUTE),
              ("/requests/group?" + route, HOSTILE_ROUTE), ("/queries", HOSTILE_SQL),
              ("/queries/group?key=q-hostile", HOSTILE_SQL), ("/issues", HOSTILE_MESSAGE),
              ("/issues/{}".format(hostile_issue), HOSTILE_MESSAGE),
              ("/trace/" + seeded["trace"], HOSTILE_SQL)]
    for path, needle in checks:
        browser.get(url(agent, path))
        assert needle in text(browser), path
        assert browser.js("return typeof window.__pwned") == "undefined", path
        assert browser.js("return document.querySelectorAll('img').length") == 0, path
        assert browser.js("return document.scripts.length") == 1, path
        # the SVGs survived: nothing closed them early
        assert browser.js("return document.querySelectorAll('svg title').length") > 0 or \
            path.startswith("/issues"), path
        logged = browser.console()
        assert logged == [], (path, logged)
    browser.get(url(agent, "/issues/{}".format(hostile_issue)))
    shot(browser, "hostile-issue")


def test_resolve_ignore_reopen_through_the_ui(agent, browser, pg_dsn, seeded):
    issue = seeded["issues"]["fp-boom"]
    browser.get(url(agent, "/issues/{}".format(issue)))
    for button, status, action in (("Resolve", "resolved", "resolved"),
                                   ("Ignore", "ignored", "ignored"),
                                   ("Reopen", "open", "reopen")):
        browser.driver.find_element(By.XPATH, "//button[text()='{}']".format(button)).click()
        shown = wait_js(browser, "var e = document.getElementById('issue-status');"
                        "return e && e.textContent", status)
        assert shown == status
        assert fetch(pg_dsn, "SELECT status FROM nightowl_issues WHERE id = %s", issue) == [
            (status,)]
        last = fetch(pg_dsn, "SELECT actor, action FROM nightowl_issue_activity WHERE "
                     "issue_id = %s ORDER BY id DESC LIMIT 1", issue)
        assert last == [("dashboard", action)]
        assert browser.console() == []
    assert "History" in text(browser) and "reopen" in text(browser)


def _http(agent, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", agent.dashboard_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict((k.lower(), v) for k, v in response.getheaders()), \
            response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_post_without_csrf_is_403_and_headers_are_strict(agent, browser, pg_dsn, seeded):
    issue = seeded["issues"]["fp-boom"]
    browser.get(url(agent, "/issues/{}".format(issue)))
    cookie = [c for c in browser.driver.get_cookies() if c["name"] == "nightowl_session"][0]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    before = fetch(pg_dsn, "SELECT status FROM nightowl_issues WHERE id = %s", issue)
    form = {"Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "nightowl_session=" + cookie["value"]}
    for body in ("status=resolved", "status=resolved&csrf=forged"):
        status, _h, _b = _http(agent, "POST", "/issues/{}/status".format(issue), body, form)
        assert status == 403
    assert fetch(pg_dsn, "SELECT status FROM nightowl_issues WHERE id = %s", issue) == before
    status, headers, _body = _http(agent, "GET", "/")
    assert status == 200
    assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'self'")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_wrong_passwords_are_rate_limited(tmp_path_factory, pg_dsn, seeded, browser):
    a = start_agent(tmp_path_factory, pg_dsn, env={"NIGHTOWL_DASHBOARD_PASSWORD": "hunter22"})
    try:
        browser.driver.delete_all_cookies()
        browser.get(url(a, "/"))
        assert browser.driver.current_url.endswith("/login")
        shot(browser, "login")
        for attempt in range(6):
            browser.js("document.body.setAttribute('data-old', '1')")
            field = browser.driver.find_element(By.NAME, "password")
            field.send_keys("wrong-{}".format(attempt))
            browser.driver.find_element(By.XPATH, "//button[text()='Log in']").click()
            message = wait_js(browser, "var e = document.querySelector('p.error');"
                              "return !document.body.hasAttribute('data-old') && e && "
                              "e.textContent")
            if attempt < 5:
                assert message == "Wrong password.", attempt
        assert message.startswith("Too many wrong passwords"), message
        # the right password is not even checked while limited: a 429 with Retry-After
        status, headers, body = _http(a, "GET", "/login")
        sid = re.search(r"nightowl_session=([^;]+)", headers["set-cookie"]).group(1)
        csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
        status, headers, _b = _http(a, "POST", "/login", urllib.parse.urlencode(
            {"password": "hunter22", "csrf": csrf}),
            {"Content-Type": "application/x-www-form-urlencoded",
             "Cookie": "nightowl_session=" + sid})
        assert status == 429 and 0 < int(headers["retry-after"]) <= 60
        status, headers, _b = _http(a, "GET", "/requests", headers={
            "Cookie": "nightowl_session=" + sid})
        assert status == 303 and headers["location"] == "/login"
    finally:
        a.stop()


def test_an_open_dashboard_without_a_password_refuses_to_start(tmp_path, pg_dsn):
    env = dict(os.environ)
    env.pop("NIGHTOWL_DASHBOARD_PASSWORD", None)
    out = subprocess.run(TWISTD + ["-n", "--pidfile=", "nightowl", "--buffer",
                                   str(tmp_path / "b.sqlite"), "--health", "none", "--dsn", pg_dsn,
                                   "--dashboard", "tcp:0:interface=0.0.0.0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("nightowl: refusing to serve the dashboard on "
                               "tcp:0:interface=0.0.0.0 without a password")
