"""Whether a newcomer may take a ``client_id`` that a live connection holds.

Two devices configured with one ``client_id`` would otherwise take it from each other on
every reconnect, forever. The holder keeps its id unless it is gone without having said
so (its socket answers no ping: a device that lost its network) or the newcomer proves
it owns the id (a valid token bound to it). Two clones that share one token both prove
it, so a token takes an id over at once only once per :data:`TOKEN_WINDOW`; within the
window after a takeover, a token newcomer is probed like any other. Pure decisions; the
probe itself is the WebSocket adapter's, the memory of recent takeovers
:class:`RecentTakeovers`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

#: Seconds after a takeover during which a token no longer takes the id over unprobed.
TOKEN_WINDOW = 60.0


class TakeoverStep(StrEnum):
    """What to do next with a newcomer whose ``client_id`` is held."""

    TAKE_OVER = "take_over"
    PROBE = "probe"  # ping the holder, then ask :func:`after_probe`
    REFUSE = "refuse"


class TakeoverReason(StrEnum):
    """Why, as the ``reason`` label of ``aip_gateway_takeovers_total``."""

    TOKEN = "token"  # the newcomer holds a valid token for the id
    PROBE_FAILED = "probe_failed"  # the holder did not answer the ping in time
    HOLDER_ALIVE = "holder_alive"  # the holder answered the ping
    DUPLICATES_REFUSED = "duplicates_refused"  # --refuse-duplicates


@dataclass(frozen=True, slots=True)
class TakeoverDecision:
    step: TakeoverStep
    reason: TakeoverReason | None = None

    @property
    def outcome(self) -> str:
        """``took_over`` or ``refused``: the ``outcome`` label of the metric."""
        return "took_over" if self.step == TakeoverStep.TAKE_OVER else "refused"


def first_step(*, refuse_duplicates: bool, token_valid: bool,
               taken_over_recently: bool = False) -> TakeoverDecision:
    """The decision before any probe, for a ``client_id`` that a connection holds;
    ``taken_over_recently``: the id changed hands within :data:`TOKEN_WINDOW`."""
    if refuse_duplicates:
        return TakeoverDecision(TakeoverStep.REFUSE, TakeoverReason.DUPLICATES_REFUSED)
    if token_valid and not taken_over_recently:
        return TakeoverDecision(TakeoverStep.TAKE_OVER, TakeoverReason.TOKEN)
    return TakeoverDecision(TakeoverStep.PROBE)


class RecentTakeovers:
    """When each ``client_id`` last changed hands, for :data:`TOKEN_WINDOW`; bounded:
    past ``capacity`` ids the oldest are forgotten (they count as not recent)."""

    def __init__(self, window: float = TOKEN_WINDOW, capacity: int = 100_000) -> None:
        self.window = window
        self.capacity = capacity
        self._at: OrderedDict[str, float] = OrderedDict()

    def recent(self, client_id: str, now: float) -> bool:
        at = self._at.get(client_id)
        return at is not None and now - at < self.window

    def note(self, client_id: str, now: float) -> None:
        self._at[client_id] = now
        self._at.move_to_end(client_id)
        while self._at and (len(self._at) > self.capacity
                            or now - next(iter(self._at.values())) >= self.window):
            self._at.popitem(last=False)


def after_probe(*, answered: bool) -> TakeoverDecision:
    """The decision once the holder was pinged: answered in time, or not."""
    if answered:
        return TakeoverDecision(TakeoverStep.REFUSE, TakeoverReason.HOLDER_ALIVE)
    return TakeoverDecision(TakeoverStep.TAKE_OVER, TakeoverReason.PROBE_FAILED)


def refusal_reason(client_id: str) -> str:
    return (
        f"another live connection holds client_id '{client_id}'; it answered a "
        f"liveness probe, so it keeps the id"
    )
