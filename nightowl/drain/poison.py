"""
Claims that kill their worker: shrink them, then isolate the payload.

A worker killed while holding a claim (the OOM killer on a batch of large
payloads, a crash in a C extension on one hostile payload) gets the same
rows again after the respawn, since released rows are the lowest pending
ids: without this the drain crash-loops on them forever and nothing
behind them drains.  L{ClaimShrinker} remembers the ids of the claim a
worker died on (the suspects); while any of them is unwritten every claim
is capped at half the rows of the claim that died, halving again at each
death on a claim holding a suspect (a bisection: the innocent half drains,
the guilty half shrinks), and when a claim of one suspect payload kills
its worker too, that payload is quarantined with the reason (a claim of
one that was not suspect yet, as a quiet drain makes, is retried once
first: one SIGKILL is no proof) (``nightowl buffer
inspect`` shows it; ``requeue`` retries it).

Pure bookkeeping (no I/O, no reactor): the supervisor asks and acts.
"""


class ClaimShrinker:
    def __init__(self, enabled=True):
        self.enabled = enabled  # False: every death just releases (supervision tests)
        self.suspects = None    # ids of the claim the last death held, not yet written
        self.limit = None       # rows a claim may take while there are suspects
        self.deaths = 0
        self.quarantined = 0

    def cap(self, limit):
        """The row limit for the next claim (``limit`` unless a claim is suspect)."""
        return limit if self.limit is None else max(1, min(limit, self.limit))

    def died(self, claim, how):
        """
        A worker died holding ``claim`` (its sorted ids, may be empty).
        Returns ``(id, reason)`` to quarantine, or None.
        """
        if not claim or not self.enabled:
            return None
        if self.suspects and self.suspects.intersection(claim):
            self.deaths += 1
        else:
            self.deaths = 1
        self.suspects = set(claim)
        # A lone payload is poison only once it was already suspect: a claim
        # of one (a quiet drain claims what little is pending) held by a
        # worker that one SIGKILL, OOM kill or crash took down was isolated
        # at once, an innocent payload taken out of the drain (bench faults
        # worker-kill: acked, never in Postgres).  It is retried once first.
        if len(claim) == 1 and self.deaths >= 2:
            reason = ("drain worker died {} times in a row on claims holding this payload "
                      "(last: {}); isolated so the drain goes on".format(self.deaths, how))
            self.clear()
            self.quarantined += 1
            return claim[0], reason
        self.limit = max(1, len(claim) // 2)
        return None

    def completed(self, ids):
        """A claim was written and reported: those ids are innocent."""
        if self.suspects:
            self.suspects.difference_update(ids)
            if not self.suspects:
                self.clear()

    def clear(self):
        self.suspects = self.limit = None
        self.deaths = 0

    def figures(self):
        return {"suspects": len(self.suspects or ()), "claim_cap": self.limit,
                "deaths": self.deaths, "isolated": self.quarantined}
