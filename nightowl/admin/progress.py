"""
Progress for long admin operations (prune, requeue, send).

On a terminal (``stream.isatty()``) one line is redrawn in place: a bar, the
count and the rate.  Otherwise (a log file, CI, a pipe) plain lines are
written at each tenth of the way and at the end, so logs stay readable.
"""

import sys
import time

BAR_WIDTH = 30
REDRAW_EVERY = 0.1


class Progress:
    """
    ``Progress(label, total)``; ``advance(n)`` or ``update(done)`` as work
    happens; ``finish(summary)`` once.  ``total`` may be None (unknown).
    """

    def __init__(self, label, total=None, stream=None, interactive=None, clock=time.monotonic):
        self.label = label
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._drawn_at = None
        self._next_tenth = 1
        self._finished = False
        if not interactive:
            self._line("{}: started{}".format(
                label, "" if total is None else " ({} to do)".format(total)))

    def advance(self, n=1, note=""):
        self.update(self.done + n, note)

    def update(self, done, note=""):
        self.done = done
        if self.interactive:
            now = self.clock()
            if (self._drawn_at is None or now - self._drawn_at >= REDRAW_EVERY
                    or (self.total and done >= self.total)):
                self._drawn_at = now
                self._draw(note)
        elif self.total:
            tenth = min(9, done * 10 // self.total)
            if tenth >= self._next_tenth and done < self.total:
                self._next_tenth = tenth + 1
                self._line("{}: {}/{} ({}%){}".format(
                    self.label, done, self.total, done * 100 // self.total,
                    " " + note if note else ""))

    def _draw(self, note):
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            filled = int(BAR_WIDTH * min(self.done, self.total) / self.total)
            bar = "[{}{}] {}/{}".format("#" * filled, "-" * (BAR_WIDTH - filled),
                                        self.done, self.total)
        else:
            bar = "{}".format(self.done)
        text = "\r{}: {} {:.1f}/s{}".format(self.label, bar, rate, " " + note if note else "")
        self.stream.write(text + "\x1b[K")
        self.stream.flush()

    def _line(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, summary=None):
        """End the bar (a newline on a terminal) and write the summary line."""
        if self._finished:
            return
        self._finished = True
        elapsed = self.clock() - self.started
        if self.interactive:
            self._draw("")
            self.stream.write("\n")
        text = summary if summary is not None else "{} done".format(self.done)
        self._line("{}: {} in {:.1f} s".format(self.label, text, elapsed))


def human_size(n):
    """Bytes as B / KiB / MiB / GiB for people."""
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("{:.0f} {}" if unit == "B" else "{:.1f} {}").format(n, unit)
        n /= 1024
