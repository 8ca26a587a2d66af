"""
Claims that kill their worker: shrink them, then isolate the payload.

A worker killed while holding a claim (the OOM killer on a batch of large
payloads, a crash in a C extension on one hostile payload) gets the same
rows again after the respawn, since released rows are the lowest pending
ids: without this the drain crash-loops on them forever and nothing
behind them drains.  L{ClaimShrinker} remembers the first id of the claim
a worker died on; every later claim is capped at half the rows of the one
that died, halving again at each death on the same first id, and when a
claim of that one payload kills its worker too, the payload is quarantined
with the reason (``nightowl buffer inspect`` shows it; ``requeue`` retries).
A claim that completes clears the suspicion.

Pure bookkeeping (no I/O, no reactor): the supervisor asks and acts.
"""


class ClaimShrinker:
    def __init__(self, enabled=True):
        self.enabled = enabled  # False: every death just releases (supervision tests)
        self.first_id = None    # first id of the claim the last death held
        self.limit = None       # rows a claim may take while suspicious
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
        first = claim[0]
        if first == self.first_id:
            self.deaths += 1
        else:
            self.first_id, self.deaths = first, 1
        if len(claim) == 1:
            reason = ("drain worker died {} times in a row on a claim holding this payload "
                      "(last: {}); isolated so the drain goes on".format(self.deaths, how))
            self.clear()
            self.quarantined += 1
            return first, reason
        self.limit = max(1, len(claim) // 2)
        return None

    def completed(self, ids):
        """A claim was written and reported: if it held the suspect id, all clear."""
        if self.first_id is not None and self.first_id in ids:
            self.clear()

    def clear(self):
        self.first_id = self.limit = None
        self.deaths = 0

    def figures(self):
        return {"suspect_id": self.first_id, "claim_cap": self.limit, "deaths": self.deaths,
                "isolated": self.quarantined}
