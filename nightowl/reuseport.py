"""
The ingest listener of one of several ingest processes: a TCP port opened
with ``SO_REUSEPORT``, so that N processes accept on the same port and the
kernel spreads new connections between them.

Only Linux balances connections between ``SO_REUSEPORT`` sockets (by a hash
of the connection's addresses); the BSDs and macOS accept the option but
hand every connection to one socket, and Windows has no such option.
``unavailable()`` says why several processes cannot run here, and
``--ingest-processes`` above 1 is refused with that line.
"""

import re
import socket
import sys



from nightowl.fastaccept import IngestPort, IngestPortService


def unavailable(platform=None):
    """None where SO_REUSEPORT balances TCP accepts, else the reason as one line."""
    platform = sys.platform if platform is None else platform
    if not hasattr(socket, "SO_REUSEPORT"):
        return "this system has no SO_REUSEPORT"
    if not platform.startswith("linux"):
        return ("SO_REUSEPORT on {} does not spread connections between processes "
                "(only Linux balances them)".format(platform))
    return None


def parse_tcp(description):
    """
    ``(port, interface, backlog)`` of a ``tcp:`` strports description
    (``tcp:2407:interface=127.0.0.1:backlog=1024``); ValueError for any other
    kind.  tap's ``--listen`` check has already parsed it once.
    """
    kind, _, rest = description.partition(":")
    if kind.lower() not in ("tcp", "tcp6"):
        raise ValueError("{!r} is not a tcp: endpoint".format(description))
    port, interface, backlog = None, "", 50
    for part in re.split(r"(?<!\\):", rest):
        key, sep, value = part.partition("=")
        value = value.replace("\\:", ":")
        if not sep:
            port = int(key)
        elif key == "port":
            port = int(value)
        elif key == "interface":
            interface = value
        elif key == "backlog":
            backlog = int(value)
    if port is None:
        raise ValueError("{!r} names no port".format(description))
    return port, interface, backlog


class ReusePort(IngestPort):
    """A listening TCP port that other processes of this user may bind as well."""

    def createInternetSocket(self):
        skt = IngestPort.createInternetSocket(self)
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return skt


def probe(description):
    """
    Bind ``description`` with SO_REUSEPORT once and let it go: raises
    ``OSError`` when the port is taken by a socket without the option (the
    children would all fail), without holding a socket that would take
    connections.  SO_REUSEADDR as the children's ports have it (Twisted sets
    it): the agent closes every connection first, so a restart under
    traffic finds its port full of TIME_WAIT sockets, which do not stop the
    children listening and must not stop the probe either.
    """
    port, interface, _backlog = parse_tcp(description)
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((interface, port))   # bound, never listening: it takes no connection
    finally:
        s.close()


class ReusePortService(IngestPortService):
    """L{IngestPortService} whose port is a L{ReusePort}: one of several ingest processes."""

    port_class = ReusePort
