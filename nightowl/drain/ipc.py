"""
The drain IPC line format (docs/design.rst, "Drain worker IPC").

One JSON object per line on the worker's fd 0 (supervisor -> worker) and
fd 1 (worker -> supervisor).  Pure functions, shared by both sides.
"""

import orjson

# worker -> supervisor
HELLO = "hello"
CLAIM = "claim"
DONE = "done"
STATS = "stats"
HEARTBEAT = "heartbeat"   # every few seconds from a thread: "not frozen"
REPORT = "report"    # the maintenance child's outcome: {"op": "report", "error": "<one line>"}
# supervisor -> worker
CLAIMED = "claimed"
MARKED = "marked"
STOP = "stop"


class ProtocolError(ValueError):
    """A line that is not one JSON object with a string ``op``."""


def encode(message):
    """One message as one line of bytes."""
    return orjson.dumps(message) + b"\n"


def decode(line):
    """Parse one line (with or without its newline) into a message dict."""
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ProtocolError("not JSON: {}".format(e.__class__.__name__))
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("not an object with a string op")
    return message
