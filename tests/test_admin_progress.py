"""
nightowl.admin.progress, the progress line of the admin commands: one
redrawn line on a terminal, plain lines in a log.
"""

import io

import pytest

from nightowl.admin.progress import Progress

pytestmark = pytest.mark.usefixtures("clean_env")


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_redraws_one_line():
    stream = TTY()
    p = Progress("send", total=4, stream=stream, clock=lambda: 0.0)
    for n in range(4):
        p.advance()
    p.finish("4 ok")
    text = stream.getvalue()
    assert text.count("\n") == 2                      # end of bar, summary
    assert "\rsend: [##############################] 4/4" in text
    assert text.rstrip().endswith("send: 4 ok in 0.0 s")


def test_progress_in_a_log_writes_plain_lines():
    stream = io.StringIO()
    p = Progress("prune", total=20, stream=stream, clock=lambda: 0.0)
    for n in range(20):
        p.advance()
    p.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "prune: started (20 to do)"
    assert lines[1] == "prune: 2/20 (10%)"
    assert lines[-2] == "prune: 18/20 (90%)"
    assert lines[-1] == "prune: 20 done in 0.0 s"
    assert "\r" not in stream.getvalue()
