"""
nightowl.quiethttp against a real HTTP server on port 0: requests through
its pool log no "Starting factory" / "Stopping factory" lines, while a
plain Twisted pool does (so the check can fail).
"""

import treq
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import HTTPConnectionPool

from nightowl import quiethttp


class _Ok(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"ok"


class QuietPoolTests(unittest.TestCase):
    def setUp(self):
        site = server.Site(_Ok())
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def factory_lines(self):
        return [e for e in self.events if "factory" in (e.get("log_format") or "").lower()]

    @defer.inlineCallbacks
    def fetch_twice(self, pool):
        url = "http://127.0.0.1:{}/".format(self.port.getHost().port)
        for _ in range(2):
            response = yield treq.get(url, pool=pool, reactor=reactor)
            self.assertEqual((yield treq.content(response)), b"ok")
        yield pool.closeCachedConnections()

    @defer.inlineCallbacks
    def test_the_quiet_pool_logs_no_factory_lines(self):
        yield self.fetch_twice(quiethttp.pool(reactor, persistent=False))
        self.assertEqual(self.factory_lines(), [])

    @defer.inlineCallbacks
    def test_a_plain_pool_does_log_them(self):
        yield self.fetch_twice(HTTPConnectionPool(reactor, persistent=False))
        self.assertTrue(self.factory_lines())
