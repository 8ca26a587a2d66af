"""
Real receivers for the alert tests: a twisted.web HTTP receiver on
127.0.0.1 port 0 that verifies webhook signatures itself, a twisted.mail
ESMTP server (optional AUTH, STARTTLS or implicit TLS) with a self-signed
certificate made here, and Postgres helpers that insert outbox rows in the
CONTRACTS.md payload shape.
"""

import datetime
import hashlib
import hmac
import json

import psycopg2
from psycopg2.extras import Json, execute_values
from twisted.cred import checkers, portal
from twisted.internet import defer, task
from twisted.mail import smtp
from twisted.mail.imap4 import PLAINCredentials
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer


def verify_signature(secret, header, body, tolerance=300, now=None):
    """What a receiver does (README "Verifying the signature")."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    t = parts["t"]
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    import time
    fresh = abs((now or time.time()) - int(t)) <= tolerance
    return hmac.compare_digest(expected, parts["v1"]) and fresh


class Receiver(Resource):
    """Records every POST; ``mode``: 'ok' (200), 'slow' (200 after 0.3 s), 'fail' (500)
    or 'hang' (never answers)."""

    isLeaf = True

    def __init__(self, secret=None):
        Resource.__init__(self)
        self.secret = secret
        self.requests = []
        self.mode = "ok"
        self.hung = []
        self.port = None

    def render_POST(self, request):
        body = request.content.read()
        headers = dict((k.decode().lower(), v[0].decode())
                       for k, v in request.requestHeaders.getAllRawHeaders())
        record = {"path": request.path.decode(), "headers": headers, "body": body,
                  "json": json.loads(body)}
        if self.secret is not None:
            record["verified"] = verify_signature(
                self.secret, headers.get("x-nightowl-signature", "t=0,v1="), body)
        self.requests.append(record)
        if self.mode == "fail":
            request.setResponseCode(500)
            return b"receiver says no"
        if self.mode == "slow":
            from twisted.internet import reactor

            def answer():
                request.write(b"ok")
                request.finish()
            reactor.callLater(0.3, answer)
            return NOT_DONE_YET
        if self.mode == "hang":
            self.hung.append(request)
            return NOT_DONE_YET
        return b"ok"

    def listen(self, reactor, port=0):
        self.port = reactor.listenTCP(port, Site(self), interface="127.0.0.1")
        return self.port

    def url(self, path="/hook"):
        return "http://127.0.0.1:{}{}".format(self.port.getHost().port, path)


# -- SMTP ---------------------------------------------------------------------------

@implementer(smtp.IMessage)
class _Message:
    def __init__(self, box, recipient):
        self.box = box
        self.recipient = recipient
        self.lines = []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        self.box.append({"to": str(self.recipient.dest), "data": b"\n".join(self.lines)})
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, box, user=None):
        self.box = box
        self.user = user

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return lambda: _Message(self.box, user)


@implementer(portal.IRealm)
class _Realm:
    def __init__(self, server):
        self.server = server

    def requestAvatar(self, avatarId, mind, *interfaces):
        self.server.logins.append(avatarId)
        return smtp.IMessageDelivery, _Delivery(self.server.box, avatarId), lambda: None


class _ESMTP(smtp.ESMTP):
    lost = False  # the session's connection has closed

    def connectionLost(self, reason):
        self.lost = True
        smtp.ESMTP.connectionLost(self, reason)


class SMTPServer(smtp.SMTPFactory):
    """ESMTP on 127.0.0.1:0.  ``users``: {b"user": b"password"} requires AUTH."""

    protocol = _ESMTP

    def __init__(self, users=None, tls_context=None):
        self.box = []
        self.logins = []
        self.sessions = []
        self.users = users
        self.tls_context = tls_context
        the_portal = None
        if users:
            the_portal = portal.Portal(
                _Realm(self), [checkers.InMemoryUsernamePasswordDatabaseDontUse(**{
                    k.decode(): v for k, v in users.items()})])
        smtp.SMTPFactory.__init__(self, the_portal)
        self.domain = b"mail.test"

    def buildProtocol(self, addr):
        p = smtp.SMTPFactory.buildProtocol(self, addr)
        p.challengers = {b"LOGIN": smtp.LOGINCredentials, b"PLAIN": PLAINCredentials}
        p.ctx = self.tls_context
        if not self.users:
            p.delivery = _Delivery(self.box)
        self.sessions.append(p)
        return p

    def closed(self, reactor, port):
        """Every session over and no client socket to ``port`` left in
        ``reactor`` (a delivery is recorded as sent before the client's QUIT,
        and a TLS close takes a few more turns: trial checks the reactor)."""
        if not all(s.lost for s in self.sessions):
            return False
        for selectable in list(reactor.getReaders()) + list(reactor.getWriters()):
            try:
                peer = selectable.getPeer()
            except Exception:
                continue
            if getattr(peer, "port", None) == port:
                return False
        return True


def make_certificate(tmp_path, host="127.0.0.1"):
    """A self-signed certificate for ``host`` (an IP SAN): (server options, CA PEM path)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from twisted.internet import ssl
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
                ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path = tmp_path / "ca.pem"
    path.write_bytes(cert_pem)
    return ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options(), str(path)


# -- waiting ---------------------------------------------------------------------------

@defer.inlineCallbacks
def eventually(reactor, predicate, timeout=30.0, what="condition"):
    start = reactor.seconds()
    while not predicate():
        if reactor.seconds() - start > timeout:
            raise AssertionError("timed out after {} s waiting for {}".format(timeout, what))
        yield task.deferLater(reactor, 0.05, lambda: None)


# -- Postgres -------------------------------------------------------------------------

def migrated(dsn):
    from nightowl import migrate
    migrate.apply(dsn, partitions=False)


def execute(dsn, sql, *args):
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else cur.rowcount
    finally:
        conn.close()


def payload(issue_id, message="Boom", cls="App\\Exceptions\\Boom", event="issue.new",
            environment="production"):
    at = "2026-12-01T22:00:00Z"
    return {"event": event, "at": at, "issue": {
        "id": issue_id, "type": "exception", "subtype": None, "status": "open",
        "exception_class": cls, "message": message, "environment": environment,
        "group_hash": "g{}".format(issue_id), "first_seen_at": at, "last_seen_at": at,
        "occurrences": 1, "users": 0, "kind": None, "target": None, "threshold_ms": None,
        "duration_ms": None}}


def insert_events(dsn, payloads):
    """One outbox row per payload (as the drain writes them); returns their ids."""
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            with conn.cursor() as cur:
                rows = execute_values(
                    cur, "INSERT INTO nightowl_alert_outbox (event, environment, payload) "
                    "VALUES %s RETURNING id",
                    [(p["event"], p["issue"]["environment"], Json(p)) for p in payloads],
                    fetch=True, page_size=1000)
                return [r[0] for r in rows]
    finally:
        conn.close()


def add_channel(dsn, name, type, settings, **kw):
    from nightowl.alerts import channels
    conn = psycopg2.connect(dsn)
    try:
        return channels.add(conn, name, type, settings, **kw)
    finally:
        conn.close()


def deliveries(dsn):
    return execute(dsn, "SELECT d.delivery_id::text, c.name, d.kind, d.status, d.attempts, "
                        "d.outbox_id FROM nightowl_alert_deliveries d JOIN "
                        "nightowl_alert_channels c ON c.id = d.channel_id ORDER BY d.id")
