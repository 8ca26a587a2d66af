"""
Alerts: everything after the outbox.

The drain writes one row per issue event into ``nightowl_alert_outbox`` in
the transaction that changes the issue.  From there:

* ``channels.py``   channel configuration: validation, storage, masking
* ``escape.py``     hostile text made safe for Slack, Discord, email headers
* ``messages.py``   the message each channel type sends (pure functions)
* ``transport.py``  HTTP (treq) and SMTP (twisted.mail) sends, with timeouts
* ``outbox.py``     fan-out, claim, lease, retry, dead, rate limit and digest (SQL)
* ``dispatcher.py`` the twisted service that runs outbox.py and sends
* ``healthalerts.py`` debounced agent-health alerts, delivered from memory
"""
