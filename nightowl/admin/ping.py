"""
``nightowl ping``: send a PING frame exactly as the laravel/nightwatch SDK
does (one connection, 0.5 s connect and read timeouts, read up to 4 bytes)
and succeed only on exactly ``2:OK``.
"""

import os
import socket
import time

from nightowl import wire

TIMEOUT = 0.5


def endpoint_address(spec):
    """
    (host, port) to connect to for a strports endpoint such as
    ``tcp:2407:interface=127.0.0.1`` (or a bare port); wildcard interfaces
    become 127.0.0.1.  Raises ValueError.
    """
    spec = str(spec).strip()
    if spec.isdigit():
        return "127.0.0.1", int(spec)
    parts = spec.replace("\\:", "\0").split(":")
    if parts[0] not in ("tcp", "tcp6"):
        raise ValueError("not a TCP endpoint: {}".format(spec))
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = keywords.get("port") or (positional[0] if positional else None)
    if port is None or not str(port).isdigit():
        raise ValueError("no port in {}".format(spec))
    host = keywords.get("interface", "").replace("\0", ":") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return host, int(port)


def parse_address(text):
    """HOST:PORT (or [v6]:PORT, or a bare PORT) -> (host, port); ValueError."""
    text = text.strip()
    if text.isdigit():
        return "127.0.0.1", int(text)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT, got {!r}".format(text))
    if not port.isdigit() or not host:
        raise ValueError("expected HOST:PORT, got {!r}".format(text))
    return host, int(port)


def default_target():
    spec = os.environ.get("NIGHTOWL_LISTEN", "").strip()
    if spec:
        try:
            host, port = endpoint_address(spec)
            return "{}:{}".format(host, port)
        except ValueError:
            pass
    return "127.0.0.1:2407"


def default_token():
    for var in ("NIGHTOWL_TOKEN", "NIGHTWATCH_TOKEN"):
        if os.environ.get(var) is not None:
            return os.environ[var]
    return None


def add_target_arguments(parser):
    parser.add_argument("--to", default=None, metavar="HOST:PORT",
                        help="the agent's ingest address (default: from NIGHTOWL_LISTEN, "
                             "else 127.0.0.1:2407)")
    parser.add_argument("--token", default=None,
                        help="the Nightwatch token (default: NIGHTOWL_TOKEN, then "
                             "NIGHTWATCH_TOKEN)")


def configure(parser):
    add_target_arguments(parser)


def target(args):
    from nightowl.errors import CommandError
    text = args.to or default_target()
    try:
        return parse_address(text)
    except ValueError as e:
        raise CommandError("--to: {}".format(e), code=2)


def exchange(host, port, frame, timeout=TIMEOUT):
    """
    Send one frame on a fresh connection and read up to 4 bytes, like the
    SDK.  Returns the reply bytes; raises OSError (refused, timeout ...).
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(frame)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                break
            reply += chunk
        return reply


def describe_error(error):
    if isinstance(error, socket.timeout):
        return "timed out"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def run(args):
    from nightowl.errors import CommandError
    host, port = target(args)
    token = args.token if args.token is not None else default_token()
    frame = wire.encode_frame(wire.PING, token)
    started = time.monotonic()
    try:
        reply = exchange(host, port, frame)
    except OSError as e:
        raise CommandError("no answer from {}:{}: {}".format(host, port, describe_error(e)))
    elapsed = (time.monotonic() - started) * 1000.0
    if reply != wire.OK:
        raise CommandError("{}:{} answered {!r} instead of 2:OK ({:.1f} ms)".format(
            host, port, reply, elapsed))
    print("2:OK from {}:{} in {:.1f} ms".format(host, port, elapsed))
    return 0
