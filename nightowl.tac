# An example .tac for `twistd -ny nightowl.tac`. It builds the same service
# as `twistd -n nightowl ...`, from the same Options: settings come from
# NIGHTOWL_* environment variables (or edit the argument list below).
from twisted.application import service

from nightowl import tap

options = tap.parse([
    # "--listen", "tcp:2407:interface=127.0.0.1",
    # "--buffer", "/var/lib/nightowl/buffer.sqlite",
], exit_on_error=True)   # a bad value: one line and exit, as `twistd nightowl` does
application = service.Application("nightowl")
tap.makeService(options).setServiceParent(application)
