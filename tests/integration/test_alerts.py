"""
The alert dispatcher against real parts: Postgres, a twisted.web receiver
on 127.0.0.1 and a twisted.mail ESMTP server, all inside the test.
"""

import os
import signal
import subprocess
import sys

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from nightowl.alerts.dispatcher import AlertDispatcher
from tests.conftest import create_database, drop_database
from tests.integration import alertkit as kit

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)


class DispatcherCase(unittest.TestCase):
    timeout = 120

    def setUp(self):
        name, self.dsn = create_database()
        self.addCleanup(drop_database, name)
        kit.migrated(self.dsn)
        self.dispatchers = []

    def dispatcher(self, **kw):
        settings = dict(reactor=reactor, poll_interval=0.1, retry_initial=0.2, retry_max=0.5,
                        stats_every=0.0, lease_seconds=30.0)
        settings.update(kw)
        d = AlertDispatcher(self.dsn, **settings)
        d.startService()
        self.dispatchers.append(d)
        self.addCleanup(self.stop, d)
        return d

    def stop(self, d):
        if d.running:
            return d.stopService()

    def receiver(self, secret=None):
        r = kit.Receiver(secret)
        port = r.listen(reactor)
        self.addCleanup(port.stopListening)
        return r

    def wait(self, predicate, what, timeout=60.0):
        return kit.eventually(reactor, predicate, timeout=timeout, what=what)


class WebhookTests(DispatcherCase):

    @defer.inlineCallbacks
    def test_signed_webhook_is_verified_by_the_receiver_and_sent_once(self):
        r = self.receiver(secret="s3cret")
        kit.add_channel(self.dsn, "ops", "webhook", {"url": r.url(), "secret": "s3cret"})
        ids = kit.insert_events(self.dsn, [kit.payload(1), kit.payload(2, message="Second")])
        d = self.dispatcher()
        yield self.wait(lambda: len(r.requests) >= 2, "two webhook posts")
        yield self.wait(lambda: (d.status()["channels"].get("ops") or {}).get("sent") == 2,
                        "the figures")
        rows = kit.deliveries(self.dsn)
        self.assertEqual([(name, kind, status, outbox) for (_id, name, kind, status, _a, outbox)
                          in rows], [("ops", "alert", "sent", ids[0]), ("ops", "alert", "sent",
                                                                         ids[1])])
        self.assertEqual([q["verified"] for q in r.requests], [True, True])
        self.assertEqual(sorted(q["headers"]["x-nightowl-delivery"] for q in r.requests),
                         sorted(row[0] for row in rows))
        # the two sends run concurrently: take the one for issue 1, whichever came first
        r.requests.sort(key=lambda q: q["json"]["issue"]["id"])
        first = r.requests[0]["json"]
        self.assertEqual(first["event"], "issue.new")
        self.assertEqual([q["json"]["issue"]["id"] for q in r.requests], [1, 2])
        self.assertEqual(first["delivery_id"], r.requests[0]["headers"]["x-nightowl-delivery"])
        self.assertEqual(r.requests[0]["headers"]["content-type"], "application/json")
        # a tampered body does not verify
        self.assertFalse(kit.verify_signature("s3cret", r.requests[0]["headers"][
            "x-nightowl-signature"], r.requests[0]["body"] + b" "))
        self.assertFalse(kit.verify_signature("other", r.requests[0]["headers"][
            "x-nightowl-signature"], r.requests[0]["body"]))
        # more rounds send nothing more
        rounds = d.figures["rounds"]
        yield self.wait(lambda: d.figures["rounds"] >= rounds + 5, "five more rounds")
        self.assertEqual(len(r.requests), 2)
        self.assertEqual(d.status()["channels"]["ops"],
                         {"pending": 0, "failed": 0, "sent": 2, "dead": 0, "digested": 0})

    @defer.inlineCallbacks
    def test_receiver_down_for_a_while_then_delivered_once_it_is_back(self):
        r = kit.Receiver()
        port = r.listen(reactor)
        number = port.getHost().port
        url = r.url()
        yield port.stopListening()          # the receiver is down
        kit.add_channel(self.dsn, "ops", "webhook", {"url": url})
        kit.insert_events(self.dsn, [kit.payload(7)])
        d = self.dispatcher()
        yield self.wait(lambda: (kit.deliveries(self.dsn) or [(0, 0, 0, 0, 0)])[0][4] >= 3,
                        "three failed attempts")
        (delivery_id, _n, _k, status, _a, _o), = kit.deliveries(self.dsn)
        self.assertEqual(status, "pending")
        error, = kit.execute(self.dsn, "SELECT last_error FROM nightowl_alert_deliveries")[0]
        self.assertIn("127.0.0.1:{}".format(number), error)
        self.assertIn("Connection", error)
        yield self.wait(lambda: d.status()["channels"]["ops"]["failed"] == 1, "failed figure")
        back = r.listen(reactor, number)     # back up, same port
        self.addCleanup(back.stopListening)
        yield self.wait(lambda: r.requests, "the delivery after the receiver is back")
        yield self.wait(lambda: kit.deliveries(self.dsn)[0][3] == "sent", "sent status")
        self.assertEqual(len(r.requests), 1)
        self.assertEqual(r.requests[0]["headers"]["x-nightowl-delivery"], delivery_id)

    @defer.inlineCallbacks
    def test_a_delivery_failing_past_max_age_is_dead(self):
        r = self.receiver()
        r.mode = "fail"
        kit.add_channel(self.dsn, "ops", "webhook", {"url": r.url()})
        kit.insert_events(self.dsn, [kit.payload(1)])
        d = self.dispatcher(max_age=2.5)
        yield self.wait(lambda: kit.deliveries(self.dsn) and kit.deliveries(self.dsn)[0][3]
                        == "dead", "a dead delivery")
        error, = kit.execute(self.dsn, "SELECT last_error FROM nightowl_alert_deliveries")[0]
        self.assertEqual(error, "HTTP POST to http://127.0.0.1:{}/… returned 500: receiver "
                                "says no".format(r.port.getHost().port))
        n = len(r.requests)
        self.assertGreaterEqual(n, 2)
        yield self.wait(lambda: d.status()["channels"]["ops"]["dead"] == 1, "dead figure")
        self.assertEqual(len(r.requests), n)

    @defer.inlineCallbacks
    def test_three_dispatchers_send_each_alert_once_per_channel(self):
        a, b = self.receiver(), self.receiver()
        a.mode = b.mode = "slow"     # a dispatcher busy sending leaves the next claims to others
        kit.add_channel(self.dsn, "a", "webhook", {"url": a.url()}, rate_limit=1000)
        kit.add_channel(self.dsn, "b", "slack", {"url": b.url()}, rate_limit=1000)
        for _ in range(3):
            self.dispatcher(poll_interval=0.05)
        for batch in range(5):
            kit.insert_events(self.dsn, [kit.payload(batch * 10 + i) for i in range(10)])
            yield task.deferLater(reactor, 0.15, lambda: None)
        yield self.wait(lambda: len(a.requests) >= 50 and len(b.requests) >= 50, "100 posts")
        for d in list(self.dispatchers):
            yield d.stopService()
        self.assertEqual(len(a.requests), 50)
        self.assertEqual(len(b.requests), 50)
        self.assertEqual(len(set(q["headers"]["x-nightowl-delivery"] for q in a.requests)), 50)
        self.assertEqual(sorted(q["json"]["issue"]["id"] for q in a.requests), list(range(50)))
        statuses = set(row[3] for row in kit.deliveries(self.dsn))
        self.assertEqual(statuses, {"sent"})
        # the work was shared (anti-vacuity: more than one dispatcher sent)
        self.assertGreater(sum(1 for d in self.dispatchers if d.figures["sent"]), 1)

    @defer.inlineCallbacks
    def test_a_storm_is_rate_limited_then_digested(self):
        r = self.receiver()
        s = self.receiver()
        kit.add_channel(self.dsn, "ops", "webhook", {"url": r.url()}, rate_limit=10,
                        rate_window=3)
        kit.add_channel(self.dsn, "chat", "slack", {"url": s.url()}, rate_limit=10,
                        rate_window=3)
        kit.insert_events(self.dsn, [kit.payload(i, message="m{}".format(i))
                                     for i in range(500)])
        start = reactor.seconds()
        self.dispatcher()
        yield self.wait(lambda: len(r.requests) >= 11 and len(s.requests) >= 11, "the digests",
                        timeout=60)
        elapsed = reactor.seconds() - start
        self.assertGreaterEqual(elapsed, 3.0)       # the digest waited for the window
        rounds = self.dispatchers[0].figures["rounds"]
        yield self.wait(lambda: self.dispatchers[0].figures["rounds"] >= rounds + 5, "rounds")
        self.assertEqual(len(r.requests), 11)
        self.assertEqual([q["json"]["event"] for q in r.requests], ["issue.new"] * 10 + ["digest"])
        self.assertEqual(sorted(q["json"]["issue"]["id"] for q in r.requests[:10]),
                         list(range(10)))
        digest = r.requests[10]["json"]
        self.assertEqual(digest["count"], 490)
        self.assertEqual(digest["events"], {"issue.new": 490})
        self.assertEqual(digest["rate_limit"], {"limit": 10, "window_seconds": 3})
        self.assertEqual([item["issue_id"] for item in digest["listed"]], [10, 11, 12])
        text = s.requests[10]["json"]["text"]
        self.assertIn("490 alerts over the limit of 10 per 3 s", text)
        self.assertIn("and 487 more new issues", text)
        counts = kit.execute(self.dsn, "SELECT c.name, d.status, count(*) FROM "
                             "nightowl_alert_deliveries d JOIN nightowl_alert_channels c ON "
                             "c.id = d.channel_id GROUP BY 1, 2 ORDER BY 1, 2")
        self.assertEqual(counts, [("chat", "digested", 490), ("chat", "sent", 11),
                                  ("ops", "digested", 490), ("ops", "sent", 11)])


class CrashTests(DispatcherCase):

    def spawn(self, *args):
        proc = subprocess.Popen([sys.executable, "-m", "tests.integration.alert_agent",
                                 self.dsn] + list(args), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    @defer.inlineCallbacks
    def test_killed_after_the_claim_before_the_send_then_delivered_with_the_same_id(self):
        r = self.receiver()
        kit.add_channel(self.dsn, "ops", "webhook", {"url": r.url()})
        kit.insert_events(self.dsn, [kit.payload(3)])
        proc = self.spawn("1.0", "die-before-send")
        yield self.wait(lambda: proc.poll() is not None, "the agent to kill itself")
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        output = proc.stdout.read()
        self.assertIn("claimed ", output)
        (delivery_id, _n, _k, status, attempts, _o), = kit.deliveries(self.dsn)
        self.assertEqual((status, attempts), ("pending", 1))
        self.assertIn("claimed " + delivery_id, output)
        self.assertEqual(r.requests, [])
        self.dispatcher()      # the restarted agent: waits for the 1 s lease, then sends
        yield self.wait(lambda: r.requests, "the delivery after the restart")
        yield self.wait(lambda: kit.deliveries(self.dsn)[0][3] == "sent", "sent")
        self.assertEqual([q["headers"]["x-nightowl-delivery"] for q in r.requests],
                         [delivery_id])

    @defer.inlineCallbacks
    def test_killed_mid_send_is_sent_again_with_the_same_delivery_id(self):
        r = self.receiver()
        r.mode = "hang"
        kit.add_channel(self.dsn, "ops", "webhook", {"url": r.url()})
        kit.insert_events(self.dsn, [kit.payload(4)])
        proc = self.spawn("1.0")
        yield self.wait(lambda: r.requests, "the first attempt to arrive")
        proc.send_signal(signal.SIGKILL)
        yield self.wait(lambda: proc.poll() is not None, "the agent to die")
        for request in r.hung:
            request.transport.loseConnection()
        r.mode = "ok"
        self.dispatcher()
        yield self.wait(lambda: len(r.requests) >= 2, "the retry after the restart")
        yield self.wait(lambda: kit.deliveries(self.dsn)[0][3] == "sent", "sent")
        ids = [q["headers"]["x-nightowl-delivery"] for q in r.requests]
        self.assertEqual(len(ids), 2)
        self.assertEqual(ids[0], ids[1])
        self.assertEqual(ids[0], kit.deliveries(self.dsn)[0][0])


class HostileContentTests(DispatcherCase):

    @defer.inlineCallbacks
    def test_slack_and_discord_bodies_are_escaped(self):
        r = self.receiver()
        kit.add_channel(self.dsn, "chat", "slack", {"url": r.url("/slack")})
        kit.add_channel(self.dsn, "dc", "discord", {"url": r.url("/discord")})
        hostile = ("@everyone @here <!channel> <@U123> <@&42> *bold* [click](http://evil.test) "
                   "<http://evil.test|click> & `code` ~x~ _y_\n# h")
        kit.insert_events(self.dsn, [kit.payload(9, message=hostile, cls="App\\<!here>Boom")])
        self.dispatcher()
        yield self.wait(lambda: len(r.requests) >= 2, "both posts")
        got = dict((q["path"], q) for q in r.requests)
        z = "\u200b"
        slack = got["/slack"]["json"]
        self.assertEqual(slack["mrkdwn"], False)
        blocks = slack["attachments"][0]["blocks"]
        self.assertEqual(blocks[1]["text"],
                         {"type": "plain_text", "text": "App\\&lt;!here&gt;Boom"})
        self.assertEqual(blocks[2]["text"]["text"], (
            "@{z}everyone @{z}here &lt;!channel&gt; &lt;@{z}U123&gt; &lt;@{z}&amp;42&gt; *bold* "
            "[click](http:{z}//evil.test) &lt;http:{z}//evil.test|click&gt; &amp; `code` ~x~ "
            "_y_ # h").format(z=z))
        self.assertEqual(slack["text"], (
            "\U0001f6a8 New Issue \u00b7 nightowl \u00b7 App\\&lt;!here&gt;Boom \u00b7 "
            "@{z}everyone @{z}here &lt;!channel&gt; &lt;@{z}U123&gt; &lt;@{z}&amp;42&gt; "
            "*bold* [click](http:{z}//evil.test) &lt;http:{z}//evil.test|click&gt; &amp; "
            "`code` ~x~ _y_ # h").format(z=z))
        discord = got["/discord"]["json"]
        self.assertEqual(discord["allowed_mentions"], {"parse": []})
        self.assertEqual(discord["embeds"][0]["description"], (
            "**App\\\\\\<!here\\>Boom**\n"
            "@{z}everyone @{z}here \\<!channel\\> \\<@{z}U123\\> \\<@{z}&42\\> \\*bold\\* "
            "\\[click\\]\\(http\\:{z}//evil.test\\) \\<http\\:{z}//evil.test\\|click\\> & "
            "\\`code\\` \\~x\\~ \\_y\\_ \\# h").format(z=z))
        for body in (got["/slack"]["body"], got["/discord"]["body"]):
            text = body.decode("utf-8")
            for raw in ("@everyone", "@here", "<!channel>", "<@U123>", "](http://"):
                self.assertNotIn(raw, text)


class EmailTests(DispatcherCase):

    def setUp(self):
        DispatcherCase.setUp(self)
        import pathlib
        import shutil
        import tempfile
        self.tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="nightowl-alerts-"))
        self.addCleanup(shutil.rmtree, str(self.tmp_path), True)

    def smtp(self, users=None, tls=None, implicit=False):
        server = kit.SMTPServer(users=users, tls_context=None if implicit else tls)
        if implicit:
            port = reactor.listenSSL(0, server, tls, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return server, port.getHost().port

    @defer.inlineCallbacks
    def send_one(self, server, port, tls, user=None, ca_file=None):
        settings = {"to": ["ops@example.test"], "from": "nightowl@example.test",
                    "smtp_host": "127.0.0.1", "smtp_port": port, "tls": tls}
        if user:
            settings.update(user=user, password_env="NIGHTOWL_TEST_SMTP_PASSWORD")
        if ca_file:
            settings["ca_file"] = ca_file
        kit.add_channel(self.dsn, "mail", "email", settings)
        kit.insert_events(self.dsn, [kit.payload(
            5, message="<script>alert(1)</script>\r\nBcc: victim@example.test",
            cls="App\\Boom\r\nX-Injected: yes")])
        self.dispatcher(environ={"NIGHTOWL_TEST_SMTP_PASSWORD": "hunter2"})
        yield self.wait(lambda: server.box, "the mail")
        yield self.wait(lambda: kit.deliveries(self.dsn)[0][3] == "sent", "sent")
        yield self.wait(lambda: server.closed(reactor, port), "the SMTP session closed")
        import email
        msg = email.message_from_bytes(server.box[0]["data"])
        self.assertEqual(server.box[0]["to"], "ops@example.test")
        self.assertEqual(msg["Subject"], "[nightowl] New Issue: App\\Boom X-Injected: yes")
        self.assertIsNone(msg["X-Injected"])
        self.assertIsNone(msg["Bcc"])
        parts = dict((p.get_content_type(), p.get_payload(decode=True).decode())
                     for p in msg.walk() if not p.is_multipart())
        self.assertIn("<script>alert(1)</script> Bcc: victim@example.test", parts["text/plain"])
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; Bcc: victim@example.test",
                      parts["text/html"])
        self.assertNotIn("<script>", parts["text/html"])
        return msg

    @defer.inlineCallbacks
    def test_starttls_with_auth(self):
        ctx, ca = kit.make_certificate(self.tmp_path)
        server, port = self.smtp(users={b"alice": b"hunter2"}, tls=ctx)
        yield self.send_one(server, port, "starttls", user="alice", ca_file=ca)
        self.assertEqual(server.logins, [b"alice"])
        self.assertTrue(server.sessions[-1].startedTLS)

    @defer.inlineCallbacks
    def test_implicit_tls_with_auth(self):
        ctx, ca = kit.make_certificate(self.tmp_path)
        server, port = self.smtp(users={b"alice": b"hunter2"}, tls=ctx, implicit=True)
        yield self.send_one(server, port, "ssl", user="alice", ca_file=ca)
        self.assertEqual(server.logins, [b"alice"])

    @defer.inlineCallbacks
    def test_plain_with_auth(self):
        server, port = self.smtp(users={b"alice": b"hunter2"})
        yield self.send_one(server, port, "none", user="alice")
        self.assertEqual(server.logins, [b"alice"])

    @defer.inlineCallbacks
    def test_wrong_password_is_a_failed_delivery_without_the_password(self):
        server, port = self.smtp(users={b"alice": b"other"})
        kit.add_channel(self.dsn, "mail", "email", {
            "to": ["ops@example.test"], "from": "nightowl@example.test",
            "smtp_host": "127.0.0.1", "smtp_port": port, "tls": "none", "user": "alice",
            "password_env": "NIGHTOWL_TEST_SMTP_PASSWORD"})
        kit.insert_events(self.dsn, [kit.payload(5)])
        self.dispatcher(environ={"NIGHTOWL_TEST_SMTP_PASSWORD": "hunter2"})
        yield self.wait(lambda: kit.execute(
            self.dsn, "SELECT last_error FROM nightowl_alert_deliveries WHERE last_error IS "
            "NOT NULL"), "a failed attempt")
        (error,), = kit.execute(self.dsn, "SELECT last_error FROM nightowl_alert_deliveries")
        self.assertIn("SMTP 127.0.0.1:{} (none) failed".format(port), error)
        self.assertNotIn("hunter2", error)
        self.assertEqual(server.box, [])


class HealthAlertTests(DispatcherCase):

    @defer.inlineCallbacks
    def test_health_alerts_go_out_from_memory_when_postgres_fails(self):
        r = self.receiver(secret="k")
        kit.add_channel(self.dsn, "ops", "webhook", {"url": r.url(), "secret": "k"})
        d = self.dispatcher(health_hold=0.2, health_every=0.5)
        yield self.wait(lambda: d.channels, "the channel cache")
        # Postgres stops answering for the alert tables
        kit.execute(self.dsn, "ALTER TABLE nightowl_alert_channels RENAME TO broken")
        yield self.wait(lambda: d.status()["last_error"], "a failing round")
        d.health_alerts.observe("degraded", [{"code": "postgres-unreachable",
                                              "level": "warning", "message": "down"}])
        yield self.wait(lambda: r.requests, "the health alert")
        body = r.requests[0]["json"]
        self.assertEqual(body["event"], "health.degraded")
        self.assertEqual(body["agent"]["reasons"][0]["code"], "postgres-unreachable")
        self.assertTrue(r.requests[0]["verified"])
        d.health_alerts.observe("healthy", [])
        yield self.wait(lambda: len(r.requests) >= 2, "the recovery")
        self.assertEqual(r.requests[1]["json"]["event"], "health.recovered")
        # the receiver has the request before the client has read the reply: wait
        # for the send to finish, so the stop finds the connection back in the pool
        yield self.wait(lambda: d.status()["health"]["sent"] >= 2, "the recovery sent")
