"""
The admin commands' PostgreSQL connection: the DSN from ``--dsn`` or
``$NIGHTOWL_DSN``, and a one-line CommandError (password masked) when it is
missing or the server cannot be reached.
"""

import os

from nightowl.dsn import mask_dsn
from nightowl.errors import CommandError


def connect(dsn, application_name):
    """A psycopg2 connection to ``dsn``, or a one-line CommandError."""
    import psycopg2
    if not dsn or not dsn.strip():
        raise CommandError("no DSN: pass --dsn or set NIGHTOWL_DSN")
    try:
        return psycopg2.connect(dsn, connect_timeout=10, application_name=application_name)
    except psycopg2.Error as e:
        first = (str(e).strip().splitlines() or ["connection failed"])[0]
        raise CommandError("cannot connect to {}: {}".format(mask_dsn(dsn), mask_dsn(first)))


def connect_args(args, application_name):
    """As L{connect}, with the DSN of ``--dsn`` or else ``$NIGHTOWL_DSN``."""
    return connect(args.dsn or os.environ.get("NIGHTOWL_DSN"), application_name)
