"""
Is a strports description loopback-only?  The rule behind "no password off
loopback": tcp/tcp6/ssl with an ``interface`` that is a loopback address (or
``localhost``); a unix socket counts as local (its file mode guards it).
Anything else (all interfaces, a public address, an unknown endpoint type)
is not.
"""

import ipaddress


def _fields(description):
    """Split on ':' honouring strports' backslash escapes."""
    fields, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


def interface(description):
    """(endpoint type, interface or None) of a strports server description."""
    fields = _fields(description.strip())
    kind = fields[0].lower() if len(fields) > 1 else "tcp"
    found = None
    for field in fields[1:]:
        if field.startswith("interface="):
            found = field[len("interface="):]
    return kind, found


def is_loopback(description):
    kind, iface = interface(description)
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    if not iface:
        return False
    if iface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(iface.strip("[]")).is_loopback
    except ValueError:
        return False
