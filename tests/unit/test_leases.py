"""session_service.leases: when a replica counts as dead, and how soon that is seen."""

from __future__ import annotations

import pytest

from session_service import leases


def test_a_lease_lapses_only_after_its_expiry() -> None:
    expires = leases.expiry(100.0, 6.0)
    assert expires == 106.0
    assert not leases.lapsed(expires, 105.9)
    assert not leases.lapsed(expires, 106.0)
    assert leases.lapsed(expires, 106.01)
    assert leases.lapsed(None, 0.0)  # no lease row: reaped already, or never held


@pytest.mark.parametrize(("ttl", "renew"), [(6.0, 2.0), (30.0, 2.0), (1.5, 0.5)])
def test_three_renewals_per_lease_at_most_every_two_seconds(ttl: float,
                                                            renew: float) -> None:
    assert leases.renew_interval(ttl) == renew


def test_the_default_fails_a_dead_replica_within_ten_seconds() -> None:
    assert leases.detection_bound(leases.TTL) <= 10.0


def test_a_live_replica_never_lapses_between_renewals() -> None:
    """Renewed every ``renew_interval``: the lease never lapses while it lives, even
    with two renewals lost (a slow store)."""
    ttl = leases.TTL
    renewed = 0.0
    for _ in range(100):
        renewed += leases.renew_interval(ttl)
        assert not leases.lapsed(leases.expiry(renewed - 2 * leases.renew_interval(ttl),
                                               ttl), renewed)
