"""
Sending one rendered alert to one channel, without blocking the reactor.

* HTTP (webhook, Slack, Discord): ``treq`` on an ``HTTPConnectionPool`` the
  caller owns (the dispatcher, closed on its stop).  The response is read (at
  most 4 KiB): a transport failure or a non-2xx status is a L{SendError}
  naming the status and the first 200 bytes of the body.  Only http/https.
  The URL is shown as ``host/…`` in every error (a Slack or Discord path is
  the credential).
* SMTP: ``twisted.mail.smtp.ESMTPSenderFactory``: STARTTLS (required when
  ``tls=starttls``), implicit TLS (``ssl``) or plain (``none``); AUTH when a
  user is set, with the password read from the environment variable named
  by ``password_env`` at send time.  Certificates are verified (against
  ``ca_file`` when set, else the system trust store).
* Every send has one overall timeout (``timeout``); on expiry the
  connection is closed and the send fails with "timed out".

Errors never contain secrets or message bodies.
"""

import email.utils
import io
import os
from email.message import EmailMessage
from email.policy import SMTP

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail.smtp import ESMTPSenderFactory

from nightowl.alerts import messages
from nightowl.alerts.channels import check_url, redact_url

DEFAULT_TIMEOUT = 15.0
BODY_READ_LIMIT = 4096
ERROR_EXCERPT = 200


class SendError(Exception):
    """A failed send, as one line fit for logs and the CLI."""


class Transport:
    """
    Renders and sends.  ``http`` is a ``treq.client.HTTPClient`` (built on
    the dispatcher's pool); ``environ`` is where ``password_env`` names are
    looked up.
    """

    log = Logger()

    def __init__(self, reactor, http, timeout=DEFAULT_TIMEOUT, environ=None):
        self.reactor = reactor
        self.http = http
        self.timeout = timeout
        self.environ = os.environ if environ is None else environ

    def send(self, channel, notice, delivery_id):
        """Deferred firing None once the channel accepted the alert; else SendError."""
        try:
            rendered = messages.render(channel.type, notice, delivery_id)
        except Exception as e:
            return defer.fail(SendError("cannot render the alert: {}".format(
                type(e).__name__)))
        if channel.type == "email":
            subject, text, html = rendered
            return self.mail(channel.settings, subject, text, html)
        headers = {b"Content-Type": [b"application/json"],
                   b"User-Agent": [b"nightowl-alerts"]}
        if channel.type == "webhook":
            headers[b"X-Nightowl-Delivery"] = [str(delivery_id).encode("ascii")]
            secret = channel.settings.get("secret")
            if secret:
                headers[b"X-Nightowl-Signature"] = [
                    messages.sign(secret, rendered, self.reactor.seconds()).encode("ascii")]
        return self.post(channel.settings.get("url"), rendered, headers)

    # -- HTTP ------------------------------------------------------------------

    def post(self, url, body, headers):
        try:
            check_url(url, "url")
        except ValueError as e:
            return defer.fail(SendError(str(e)))
        shown = redact_url(url)
        d = self.http.post(url, data=body, headers=headers, unbuffered=True,
                           reactor=self.reactor)
        d.addCallback(self._read, shown)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._http_failed, shown)
        return d

    def _read(self, response, shown):
        import treq
        chunks = []
        size = [0]

        def collect(data):
            if size[0] < BODY_READ_LIMIT:
                chunks.append(data[:BODY_READ_LIMIT - size[0]])
            size[0] += len(data)

        d = treq.collect(response, collect)

        def done(_):
            if not 200 <= response.code < 300:
                excerpt = b"".join(chunks)[:ERROR_EXCERPT].decode("utf-8", "replace")
                raise SendError("HTTP POST to {} returned {}: {}".format(
                    shown, response.code, " ".join(excerpt.split()) or "(empty body)"))
            return None
        d.addCallback(done)
        return d

    def _http_failed(self, failure, shown):
        if failure.check(SendError):
            return failure
        if failure.check(defer.TimeoutError, defer.CancelledError):
            raise SendError("HTTP POST to {} timed out after {:g} s".format(shown, self.timeout))
        raise SendError("HTTP POST to {} failed: {}".format(shown, _describe(failure)))

    # -- SMTP ------------------------------------------------------------------

    def mail(self, settings, subject, text, html):
        try:
            message, sender, recipients = build_email(settings, subject, text, html)
            username = settings.get("user")
            password = None
            if username:
                var = settings.get("password_env")
                password = self.environ.get(var) if var else None
                if var and password is None:
                    raise SendError("the SMTP password variable ${} is not set in the "
                                    "agent's environment".format(var))
        except SendError as e:
            return defer.fail(e)
        host, port, tls = settings["smtp_host"], int(settings["smtp_port"]), settings["tls"]
        where = "SMTP {}:{} ({})".format(host, port, tls)
        try:
            context = _tls_options(host, settings.get("ca_file")) if tls != "none" else None
        except Exception as e:
            return defer.fail(SendError("{}: bad TLS settings: {}".format(where, e)))
        connector = []

        def cancel(_d):
            for c in connector:
                c.disconnect()
        result = defer.Deferred(cancel)
        factory = _SenderFactory(
            username.encode("utf-8") if username else None,
            password.encode("utf-8") if password is not None else None,
            sender, recipients, io.BytesIO(message), result, retries=0,
            timeout=self.timeout,
            contextFactory=context if tls == "starttls" else None,
            heloFallback=not username and tls == "none",
            requireAuthentication=bool(username),
            requireTransportSecurity=tls == "starttls")
        factory.noisy = False
        if tls == "ssl":
            connector.append(self.reactor.connectSSL(host, port, factory, context,
                                                     timeout=self.timeout))
        else:
            connector.append(self.reactor.connectTCP(host, port, factory,
                                                     timeout=self.timeout))
        result.addTimeout(self.timeout, self.reactor)

        def failed(failure):
            if failure.check(defer.TimeoutError, defer.CancelledError):
                raise SendError("{} timed out after {:g} s".format(where, self.timeout))
            raise SendError("{} failed: {}".format(where, _describe(failure)))
        result.addCallbacks(lambda _: None, failed)
        return result


class _SenderFactory(ESMTPSenderFactory):
    """ESMTPSenderFactory that tolerates a connection lost after its result fired
    (a failed or cancelled send): the stock one raises AttributeError then."""

    def _processConnectionError(self, connector, err):
        if getattr(self, "result", None) is None:
            return None
        return ESMTPSenderFactory._processConnectionError(self, connector, err)


def _tls_options(host, ca_file):
    from twisted.internet import ssl
    if ca_file:
        with open(ca_file, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
        return ssl.optionsForClientTLS(host, trustRoot=trust)
    return ssl.optionsForClientTLS(host)


def build_email(settings, subject, text, html):
    """(message bytes, sender, [recipients]): multipart/alternative, plain text + HTML."""
    sender = settings.get("from")
    recipients = list(settings.get("to") or ())
    if not sender or not recipients or not settings.get("smtp_host"):
        raise SendError("incomplete email settings (needs from, to and smtp host)")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.utils.formataddr(("nightowl", sender))
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rsplit("@", 1)[-1])
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    # LF line ends: twisted.mail's sender turns them into CRLF and dot-stuffs
    return msg.as_bytes(policy=SMTP.clone(linesep="\n")), sender, recipients


def _describe(failure):
    value = failure.value
    text = " ".join(str(value).split())
    name = type(value).__name__
    if not text:
        return name
    return "{}: {}".format(name, text[:300])
