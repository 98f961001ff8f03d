"""What the manager needs from the outside world, named by intent.

:class:`GatewayPort` is the link to the gateways (implemented by
:class:`~session_service.link_servicer.LinkHub`); :class:`RecordSink` takes the session
records (implemented by :class:`~session_service.store.SessionStore`, or
:class:`NullRecords` when no store is configured). Both are fire-and-forget: a ``False``
from the gateway port means the message could not even be queued. A record write may
take a ``written`` callback, called later on the event loop with ``True`` once the write
is durable or ``False`` once it failed; it is how an ack waits for its session's record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from session_service.core.device_queue import MemorySlots, Placement, QueueLimits

if TYPE_CHECKING:
    from session_service.core.session import Session
    from session_service.records import Claim, SessionRecord
    from session_service.store_reads import Filters, Page


class GatewayPort(Protocol):
    def open_session(self, gateway_id: str, session: Session) -> bool:
        """Tell a gateway other than the submitter's that it routes ``session``."""
        ...

    def send_command(self, gateway_id: str, device_id: str, session_id: str,
                     frame_json: bytes) -> bool:
        """Queue a ``command`` frame for a device."""
        ...

    def end_session(self, gateway_id: str, session: Session, *, notify_requester: bool,
                    notify_device: bool, frame_json: bytes, active_sessions: int) -> bool:
        """Tell a gateway that ``session`` ended: it drops its routes and delivers the
        ``task_end`` frame to whom the flags name."""
        ...


Written = Callable[[bool], None]


class RecordSink(Protocol):
    @property
    def writable(self) -> bool:
        """``False`` while writes fail: a session started now could not be recorded."""
        ...

    def record_started(self, record: SessionRecord, written: Written | None = None,
                       claim: Claim | None = None) -> None:
        """Create the session's record unless its id is held; ``claim.winner`` is the
        holder (set before ``written`` runs), ``None`` when this creation won, and
        ``claim.placement`` the new session's place in its device's line."""
        ...

    def poll_slots(self, session_ids: list[str],
                   done: Callable[[dict[str, Placement] | None], None]) -> None:
        """Start what may start among waiting sessions; ``done`` gets where each
        stands, or ``None`` when the sink could not answer."""
        ...

    def release_slot(self, session_id: str, written: Written | None = None) -> None:
        """Give back a session's ticket; its end's record does it too."""
        ...

    def record_command(self, session_id: str, seq: int, response_id: str, actions: Any,
                       sent_at: float) -> None: ...

    def record_results(self, session_id: str, seq: int, results: Any, received_at: float,
                       status: str, size: int = 0) -> None: ...

    def record_turn(self, session_id: str, seq: int, turn: Any, at: float) -> None:
        """One model turn of the session's transcript (JSON-able)."""
        ...

    def record_ended(self, session_id: str, *, state: str, result: Any, error: str | None,
                     cancel_reason: str | None, ended_at: float, steps_done: int,
                     steps_total: int, written: Written | None = None) -> None: ...


class RecordReader(Protocol):
    """The shared store's reads (blocking: called in worker threads)."""

    def get(self, session_id: str, with_commands: bool = True) -> SessionRecord | None: ...

    def page(self, filters: Filters, page_size: int = 100, page_token: str = "") -> Page: ...


class NullRecords:
    """The sink of a replica without a store: sessions live in memory only, every write
    counts as done at once, every id is free (memory alone knows its holders), and the
    devices' queues are this replica's own."""

    writable = True

    def __init__(self, limits: QueueLimits | None = None) -> None:
        self.slots = MemorySlots(limits if limits is not None else QueueLimits())

    def record_started(self, record: SessionRecord, written: Written | None = None,
                       claim: Claim | None = None) -> None:
        if claim is not None and self.slots.limits.max_running:
            claim.placement = self.slots.enqueue(record.session_id, record.device_id)
        if written is not None:
            written(True)

    def poll_slots(self, session_ids: list[str],
                   done: Callable[[dict[str, Placement] | None], None]) -> None:
        done(self.slots.poll(session_ids))

    def release_slot(self, session_id: str, written: Written | None = None) -> None:
        self.slots.release(session_id)
        if written is not None:
            written(True)

    def record_command(self, session_id: str, seq: int, response_id: str, actions: Any,
                       sent_at: float) -> None:
        pass

    def record_results(self, session_id: str, seq: int, results: Any, received_at: float,
                       status: str, size: int = 0) -> None:
        pass

    def record_turn(self, session_id: str, seq: int, turn: Any, at: float) -> None:
        pass

    def record_ended(self, session_id: str, *, state: str, result: Any, error: str | None,
                     cancel_reason: str | None, ended_at: float, steps_done: int,
                     steps_total: int, written: Written | None = None) -> None:
        self.slots.release(session_id)
        if written is not None:
            written(True)
