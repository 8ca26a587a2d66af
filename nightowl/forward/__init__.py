"""
``--forward HOST:PORT``: every acknowledged payload also goes upstream, as
the byte-identical frame the SDK sent, to another agent speaking the same
protocol (the official Nightwatch agent, or another nightowl).

``client.py`` sends one frame per connection and reads the reply;
``service.py`` is the L{ForwardService}: the queue in the buffer
(L{nightowl.buffer.forwardq}), in-flight bound, retries with backoff and the
figures of /status and /metrics.
"""
