"""The lease rule: when a replica counts as alive, and when its sessions are lost.

Each replica writes ``lease_expires = now + ttl`` into the shared store every ``renew``
seconds. A replica whose lease has lapsed is dead as far as the others are concerned:
the first survivor to notice marks its running sessions ``failed`` with the cancel
reason ``replica_lost``, by a conditional update (``state = 'running'``), so they are
marked exactly once however many survivors notice together. Pure functions, so that the
timing is tested without a store or a clock.
"""

from __future__ import annotations

#: The default lease: a killed replica's sessions are failed within ``TTL + RENEW``.
TTL = 6.0


def renew_interval(ttl: float) -> float:
    """Seconds between renewals: three chances per lease, and at most every 2 s."""
    return min(2.0, ttl / 3)


def expiry(now: float, ttl: float) -> float:
    """The lease's new expiry, renewed at ``now``."""
    return now + ttl


def lapsed(lease_expires: float | None, now: float) -> bool:
    """Whether the holder of a lease counts as dead at ``now``; no lease at all (its row
    was already reaped) counts as lapsed."""
    return lease_expires is None or lease_expires < now


def detection_bound(ttl: float) -> float:
    """The longest a survivor takes to fail a dead replica's sessions: the rest of the
    dead replica's lease, plus one renewal period of the survivor (it reaps as it
    renews)."""
    return ttl + renew_interval(ttl)
