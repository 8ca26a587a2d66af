"""
How a PostgreSQL DSN may be shown: the one ``mask_dsn`` every log line,
error message and status page uses (never show a password).
"""

import re

#: ``password=secret`` / ``password = 'a b'`` in a keyword DSN or a URL query
_KEYWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
#: ``scheme://user:secret@host`` (the user may be empty)
_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_dsn(dsn):
    """The DSN (or any text quoting one) with every password replaced by ***."""
    text = _KEYWORD.sub(r"\1***", dsn or "")
    return _URL.sub(r"\1***@", text)
