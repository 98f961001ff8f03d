"""gateway_service.replicas.transport.Outage: which failed reconnects deserve a warning."""

from __future__ import annotations

from gateway_service.replicas.transport import Outage


def test_the_first_failure_warns_then_one_per_interval() -> None:
    outage = Outage(every=30.0)
    warned = [outage.failed(now) for now in (0.0, 0.5, 10.0, 29.9, 30.0, 45.0, 60.1)]
    assert warned == [True, False, False, False, True, False, True]
    assert outage.failures == 7


def test_a_new_outage_warns_at_once() -> None:
    outage = Outage(every=30.0)
    outage.failed(0.0)
    outage.failed(1.0)
    assert outage.end() == 2
    assert outage.failures == 0
    assert outage.failed(2.0)
