"""
Fault injection against the real agent (``nightowl bench faults``), judged by
a set-membership oracle rather than by timings.

Every payload sent carries a unique sequence number; the sender records a
number as acked only on ``2:OK``.  After each fault and a quiet period the
buffer (or Postgres) is read back and every acked id must be stored, no id
twice, and nothing stored that was never sent.  Each trial also carries
anti-vacuity checks, so a trial that passes because nothing happened is
reported as a failure.  The trials are plain functions returning a result
dict (``ok``, ``violations``, figures), shared by the CI tests
(tests/integration/test_faults_*.py, small sizes) and the command (long).

One module per job: L{oracle} (the verdicts), L{frames} (hostile frames and
their reference judge), L{draining} (watching a draining agent), the trials
L{ingest}, L{corrupt}, L{hostile}, L{drain}, L{outage} and L{guards}, and
L{command} (the CLI).  The agent itself is started by L{nightowl.bench.agent}.
"""
