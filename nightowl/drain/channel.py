"""
The worker's end of the supervisor pipes (fd 0 in, fd 1 out).

A reader thread turns stdin lines into messages (``nightowl.drain.ipc``);
``stop`` sets the stop event wherever the main loop is; EOF calls
``on_eof`` (exit at once).  A heartbeat thread tells the supervisor the
worker is not frozen.  Sends from both threads go through one lock.
"""

import queue
import threading
import time

from nightowl.drain import ipc


class Channel:
    def __init__(self, infile, outfile, stop_event, on_eof, log):
        self._in = infile
        self._out = outfile
        self._stop = stop_event
        self._on_eof = on_eof
        self._log = log
        self._queue = queue.Queue()
        self._lock = threading.Lock()   # the heartbeat thread writes too
        self._thread = threading.Thread(target=self._read, name="ipc-reader", daemon=True)

    def start(self):
        self._thread.start()

    def _read(self):
        while True:
            line = self._in.readline()
            if not line:
                self._on_eof()
                self._queue.put(None)
                return
            if not line.strip():
                continue
            try:
                message = ipc.decode(line)
            except ipc.ProtocolError as e:
                self._log("warn", "ignoring a bad line from the supervisor: {}".format(e))
                continue
            if message["op"] == ipc.STOP:
                self._stop.set()
            else:
                self._queue.put(message)

    def send(self, message):
        line = ipc.encode(message)
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def start_heartbeat(self, every):
        """A thread sending ``heartbeat`` every ``every`` s: silence means frozen."""
        def beat():
            while True:
                time.sleep(every)
                try:
                    self.send({"op": ipc.HEARTBEAT})
                except (OSError, ValueError):
                    return
        threading.Thread(target=beat, name="ipc-heartbeat", daemon=True).start()

    def expect(self, op):
        """Block until the supervisor sends ``op``; None on EOF."""
        while True:
            message = self._queue.get()
            if message is None:
                self._queue.put(None)
                return None
            if message["op"] == op:
                return message
            self._log("warn", "unexpected message {!r} while waiting for {!r}".format(
                message["op"], op))
