"""
HTTP client connection pools that do not log every connection.

Twisted's ``HTTPConnectionPool`` makes a client factory per connection,
and each logs "Starting factory" and "Stopping factory" at info: two lines
for every child /status the several-process parent reads (each scrape of
its /metrics, each ``nightowl status``) and for every alert webhook sent.
``pool()`` gives the pool a factory class with ``noisy = False`` (the
pool's ``_factory`` hook, as other long-running Twisted services do).
"""

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory


class QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    noisy = False


def pool(reactor, persistent):
    """An ``HTTPConnectionPool`` whose connections log nothing at start and stop."""
    p = HTTPConnectionPool(reactor, persistent=persistent)
    p._factory = QuietHTTP11ClientFactory
    return p
