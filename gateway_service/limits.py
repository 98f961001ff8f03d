"""Per-client limits that need a little state: a token bucket for task submissions,
kept per ``client_id`` so that reconnecting does not refill it."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """Allows ``rate`` events per second on average, bursts of up to ``burst``."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def allow(self, now: float) -> bool:
        if self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def idle(self, now: float) -> bool:
        """Whether the bucket would be full again by ``now``: forgetting it loses nothing."""
        return not self.stamp or self.tokens + (now - self.stamp) * self.rate >= self.burst


class BucketsByClient:
    """One :class:`TokenBucket` per ``client_id``, shared by its successive connections.

    Bounded: buckets that have refilled are forgotten (a new one would be just as full),
    and past ``max_buckets`` the least recently used ones go whatever their state.
    """

    def __init__(self, rate: float, burst: float, max_buckets: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, client_id: str, now: float) -> TokenBucket:
        """The bucket of ``client_id``, made full if it has none."""
        self._evict(now)
        bucket = self._buckets.get(client_id)
        if bucket is None:
            bucket = self._buckets[client_id] = TokenBucket(self.rate, self.burst)
        else:
            self._buckets.move_to_end(client_id)
        return bucket

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        # Least recently handed out first: the idle ones gather at the front.
        while buckets:
            client_id, oldest = next(iter(buckets.items()))
            if len(buckets) < self.max_buckets and not oldest.idle(now):
                break
            del buckets[client_id]
