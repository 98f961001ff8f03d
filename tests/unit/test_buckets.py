"""Task buckets per client_id: shared across connections, bounded, idle ones forgotten."""

from __future__ import annotations

from gateway_service.limits import BucketsByClient


def test_the_same_id_gets_the_same_bucket() -> None:
    buckets = BucketsByClient(rate=1.0, burst=2)
    bucket = buckets.bucket("a", 10.0)
    assert bucket.allow(10.0) and bucket.allow(10.0) and not bucket.allow(10.0)
    again = buckets.bucket("a", 10.5)
    assert again is bucket and not again.allow(10.5)


def test_refilled_buckets_are_forgotten() -> None:
    buckets = BucketsByClient(rate=1.0, burst=2)
    assert buckets.bucket("a", 100.0).allow(100.0)
    buckets.bucket("b", 100.5)
    assert len(buckets) == 2
    buckets.bucket("c", 105.0)  # "a" and "b" are full again by now
    assert len(buckets) == 1


def test_at_most_max_buckets() -> None:
    buckets = BucketsByClient(rate=0.001, burst=1, max_buckets=3)
    for n in range(10):
        assert buckets.bucket(f"id{n}", 1.0).allow(1.0)
        assert len(buckets) <= 3
