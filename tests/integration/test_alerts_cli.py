"""
``nightowl alerts add|list|remove|test`` as a user runs them (a subprocess),
against real Postgres and a real receiver in this process.
"""

import os
import subprocess
import sys

from twisted.internet import defer, reactor, utils
from twisted.trial import unittest

from tests.conftest import create_database, drop_database
from tests.integration import alertkit as kit

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
CLI = [sys.executable, "-m", "nightowl.cli", "alerts"]


class AlertsCommandTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        name, self.dsn = create_database()
        self.addCleanup(drop_database, name)
        kit.migrated(self.dsn)

    def run_cli(self, *args):
        out = subprocess.run(CLI + ["--dsn", self.dsn] + list(args), cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout, out.stderr

    def spawn_cli(self, *args):
        """The same, without blocking the reactor (the receiver lives in this process)."""
        return utils.getProcessOutputAndValue(
            sys.executable, ["-m", "nightowl.cli", "alerts", "--dsn", self.dsn] + list(args),
            env=dict(os.environ), path=ROOT, reactor=reactor)

    def test_add_list_remove(self):
        code, out, err = self.run_cli("add", "webhook", "--name", "ops", "--url",
                                      "https://hooks.example.test/x", "--secret", "s3cret")
        self.assertEqual((code, out.strip()), (0, "added webhook channel ops"))
        code, out, err = self.run_cli("add", "slack", "--name", "chat", "--url",
                                      "https://hooks.slack.com/services/T0/B0/TOKEN")
        self.assertEqual(code, 0)
        code, out, err = self.run_cli(
            "add", "email", "--name", "mail", "--to", "a@example.test", "--from",
            "n@example.test", "--smtp", "smtp.example.test:2525", "--tls", "none", "--user",
            "u", "--password-env", "SMTP_PASSWORD")
        self.assertEqual(code, 0, err)
        code, out, err = self.run_cli("add", "webhook", "--name", "ops", "--url", "https://x/")
        self.assertEqual(code, 1)
        self.assertEqual(err.strip(), "nightowl alerts: a channel named 'ops' exists already")
        code, out, err = self.run_cli("add", "webhook", "--name", "bad", "--url", "ftp://x/")
        self.assertEqual(code, 1)
        self.assertIn("expected an http:// or https:// URL", err)
        code, out, err = self.run_cli("list")
        self.assertEqual(code, 0)
        self.assertNotIn("s3cret", out)
        self.assertNotIn("TOKEN", out)
        lines = out.strip().splitlines()
        self.assertEqual([line.split()[0] for line in lines], ["chat", "mail", "ops"])
        self.assertIn('"secret":"***"', lines[2])
        self.assertIn('"url":"https://hooks.slack.com/…"', lines[0])
        self.assertIn('"password_env":"SMTP_PASSWORD"', lines[1])
        self.assertIn("rate=10/300s", lines[0])
        self.assertEqual(self.run_cli("remove", "chat")[:2], (0, "removed chat\n"))
        code, out, err = self.run_cli("remove", "chat")
        self.assertEqual((code, err.strip()), (1, "nightowl alerts: no channel named 'chat'"))

    @defer.inlineCallbacks
    def test_test_command_passes_and_fails_with_the_actual_error(self):
        good = kit.Receiver(secret="k")
        port = good.listen(reactor)
        self.addCleanup(port.stopListening)
        bad = kit.Receiver()
        bad.mode = "fail"
        bad_port = bad.listen(reactor)
        self.addCleanup(bad_port.stopListening)
        kit.add_channel(self.dsn, "good", "webhook", {"url": good.url(), "secret": "k"})
        out, err, code = yield self.spawn_cli("test", "--channel", "good")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.decode().splitlines()[0], "PASS good (webhook)")
        self.assertEqual(len(good.requests), 1)
        self.assertTrue(good.requests[0]["verified"])
        self.assertEqual(good.requests[0]["json"]["event"], "test")

        kit.add_channel(self.dsn, "bad", "discord", {"url": bad.url("/api/webhooks/1/SECRET")})
        closed = kit.Receiver()
        p = closed.listen(reactor)
        closed_url = closed.url()
        yield p.stopListening()
        kit.add_channel(self.dsn, "gone", "slack", {"url": closed_url})
        out, err, code = yield self.spawn_cli("test")
        lines = out.decode().splitlines()
        self.assertEqual(code, 1)
        self.assertEqual(lines[0], "FAIL bad (discord): HTTP POST to http://127.0.0.1:{}/… "
                                   "returned 500: receiver says no".format(
                                       bad_port.getHost().port))
        self.assertTrue(lines[1].startswith(
            "FAIL gone (slack): HTTP POST to {}/… failed: ConnectionRefusedError".format(
                closed_url.rsplit("/", 1)[0])), lines[1])
        self.assertEqual(lines[2], "PASS good (webhook)")
        self.assertNotIn("SECRET", out.decode())
        self.assertEqual(len(good.requests), 2)

        out, err, code = yield self.spawn_cli("test", "--channel", "nope")
        self.assertEqual((code, err.decode().strip()),
                         (1, "nightowl alerts: no enabled channel named 'nope'"))
