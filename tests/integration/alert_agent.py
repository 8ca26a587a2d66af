"""
A dispatcher in its own process, for the crash test:
``python -m tests.integration.alert_agent DSN LEASE_SECONDS [die-before-send]``.

With ``die-before-send`` it SIGKILLs itself after claiming a delivery and
before sending it.  Prints ``ready`` once started.
"""

import os
import signal
import sys

from twisted.internet import reactor

from nightowl.alerts.dispatcher import AlertDispatcher


def main():
    dsn, lease = sys.argv[1], float(sys.argv[2])
    die = len(sys.argv) > 3 and sys.argv[3] == "die-before-send"
    dispatcher = AlertDispatcher(dsn, reactor=reactor, poll_interval=0.1, lease_seconds=lease,
                                 retry_initial=0.2, retry_max=0.5, stats_every=0.0)
    dispatcher.startService()
    if die:
        real = dispatcher.transport.send

        def send(channel, notice, delivery_id):
            sys.stdout.write("claimed {}\n".format(delivery_id))
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
            return real(channel, notice, delivery_id)
        dispatcher.transport.send = send
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
