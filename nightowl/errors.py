"""
Exceptions shared by the library and the command line.

Library modules raise these; ``nightowl.cli`` and ``nightowl.service`` turn
them into one line on stderr.  Nothing here imports the rest of nightowl.
"""


class CommandError(Exception):
    """A user-facing failure of an admin command: printed as one line, exit code ``code``."""

    def __init__(self, message, code=1):
        Exception.__init__(self, message)
        self.code = code


class StartupError(SystemExit):
    """
    A reason the agent cannot start, as one line (``nightowl: <reason>``).
    A SystemExit, so twistd prints the line and exits non-zero without a traceback.
    """
