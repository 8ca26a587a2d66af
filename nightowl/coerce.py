"""
The coerce functions of ``tap.Options``: each turns one option's text
(command line or ``NIGHTOWL_*`` variable) into its value, or raises
``UsageError`` with a one-line reason naming the option.
"""

import re

from twisted.python import usage


def int_at_least(name, minimum):
    def coerce(value):
        try:
            number = int(str(value).strip())
        except ValueError:
            raise usage.UsageError(
                "--{}: expected a whole number, got {!r}".format(name, value))
        if number < minimum:
            raise usage.UsageError("--{}: must be {}, got {}".format(
                name, "greater than 0" if minimum == 1 else "{} or more".format(minimum),
                number))
        return number
    return coerce


def positive_int(name):
    return int_at_least(name, 1)


def non_negative_int(name):
    return int_at_least(name, 0)


def positive_float(name):
    def coerce(value):
        try:
            number = float(str(value).strip())
        except ValueError:
            raise usage.UsageError(
                "--{}: expected a number of seconds, got {!r}".format(name, value))
        if not number > 0:
            raise usage.UsageError(
                "--{}: must be greater than 0, got {}".format(name, value))
        return number
    return coerce


def size(name):
    """Bytes, with an optional K/M/G suffix (powers of 1024)."""
    def coerce(value):
        text = str(value).strip().upper().rstrip("B").rstrip("I")
        factor = 1
        for suffix, mult in (("K", 1024), ("M", 1024 ** 2), ("G", 1024 ** 3)):
            if text.endswith(suffix):
                text, factor = text[:-1], mult
                break
        try:
            number = int(float(text) * factor)
        except ValueError:
            raise usage.UsageError(
                "--{}: expected a size like 10485760 or 10M, got {!r}".format(name, value))
        if number <= 0:
            raise usage.UsageError("--{}: must be greater than 0".format(name))
        return number
    return coerce


def strports(name, allow_none=False):
    def coerce(value):
        text = str(value).strip()
        if allow_none and text.lower() in ("none", "off", ""):
            return None
        if not text or ":" not in text and not text.isdigit():
            raise usage.UsageError(
                "--{}: expected a strports endpoint like tcp:2407:interface=127.0.0.1, "
                "got {!r}".format(name, value))
        if text.isdigit():
            text = "tcp:" + text
        check_endpoint(name, text)
        return text
    return coerce


def check_endpoint(name, text):
    """A strports description that parses, with a port in 0-65535 (no I/O but ssl's key file)."""
    kind, _, rest = text.partition(":")
    if kind.lower() in ("tcp", "tcp6", "ssl"):
        parts = re.split(r"(?<!\\):", rest)
        ports = [p[5:] for p in parts if p.startswith("port=")] or [
            p for p in parts if "=" not in p][:1]
        port = ports[0] if ports else ""
        if not port.strip().isdigit():
            raise usage.UsageError("--{}: expected a port number in {!r}".format(name, text))
        if not 0 <= int(port) <= 65535:
            raise usage.UsageError("--{}: port {} is out of range (0-65535)".format(
                name, int(port)))
    from twisted.internet import endpoints
    try:
        endpoints.serverFromString(None, text)
    except Exception as e:
        raise usage.UsageError("--{}: {!r} is not a valid endpoint: {}".format(
            name, text, str(e).splitlines()[0] if str(e) else e.__class__.__name__))


def dsn(name):
    """A DSN libpq can parse (checked without connecting; never echoed: it may hold a password)."""
    def coerce(value):
        text = str(value).strip()
        if not text:
            return text
        from psycopg2.extensions import parse_dsn
        try:
            parse_dsn(text)
        except Exception:
            raise usage.UsageError(
                "--{}: not a PostgreSQL connection string (expected \"host=... dbname=... "
                "user=...\" or postgresql://user@host/dbname)".format(name))
        return text
    return coerce


def choice(name, choices):
    def coerce(value):
        text = str(value).strip().lower()
        if text not in choices:
            raise usage.UsageError("--{}: expected one of {}, got {!r}".format(
                name, "/".join(choices), value))
        return text
    return coerce


def text(name):
    def coerce(value):
        return str(value)
    return coerce


def host_port(name):
    """``HOST:PORT`` (an upstream to connect to), or empty / 'none' for off (None)."""
    def coerce(value):
        from nightowl.forward.client import parse_host_port
        text = str(value).strip()
        if not text or text.lower() == "none":
            return None
        try:
            parse_host_port(text)
        except ValueError as e:
            raise usage.UsageError("--{}: {}".format(name, e))
        return text
    return coerce
