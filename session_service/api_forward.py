"""Reaching a session's owner: Watch and Cancel on a replica that does not run it.

Reads need no owner: every replica reads the shared store. A watch needs the owner's
live events and a cancel its running agent, so a replica that is asked about a running
session of another replica forwards the call to the owner's ``--advertise-address``, as
the owner's lease in the store gives it. A forwarded call carries the ``aip-forwarded``
metadata and is never forwarded again, so two replicas that disagree about an owner
cannot bounce a call between them.

When the owner cannot be reached (its lease lapsed, or the call fails UNAVAILABLE), its
sessions are about to be failed ``replica_lost`` by a survivor (:mod:`session_service.
leases`); the caller waits for that, bounded, and is answered from the store. So a
backend never needs to know the owner, not even when it dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence

import grpc

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from aip_link.channel import CHANNEL_OPTIONS
from aip_wire.vocab import LIVE_STATES
from session_service import leases
from session_service.api_errors import ApiError, Reason, abort, not_found
from session_service.api_views import snapshot, stored_info
from session_service.core.session import UpdateKind
from session_service.records import SessionRecord
from session_service.store import SessionStore
from session_service.store_reads import Lease

log = logging.getLogger("aip.session.forward")

#: Call metadata marking a call one replica forwarded to another.
FORWARDED = "aip-forwarded"
#: Codes that mean "the owner is not there", rather than an answer from it.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: How many owners' channels are kept open at once.
MAX_CHANNELS = 64
#: The longest a cancel forwarded to the session's owner may take (the owner waits up
#: to 5 s for the session to end).
FORWARD_TIMEOUT = 10.0


def owner_address(rows: Sequence[Lease], replica_id: str, now: float) -> str | None:
    """Where ``replica_id`` can be reached at ``now``: the address of its freshest live
    lease, or ``None`` when it holds none (it is dead, or has not written one yet)."""
    alive = [row for row in rows if row.replica_id == replica_id and row.address
             and not leases.lapsed(row.lease_expires, now)]
    return max(alive, key=lambda row: row.lease_expires).address if alive else None


def was_forwarded(metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
    return any(key == FORWARDED for key, _ in metadata or ())


class Owners:
    """Channels to other replicas of this store, opened when first needed."""

    def __init__(self, store: SessionStore, replica_id: str, lease_ttl: float,
                 token: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.store = store
        self.replica_id = replica_id
        #: The longest a caller waits for a lost owner's session to be failed.
        self.wait_for_loss = leases.detection_bound(lease_ttl) + 2.0
        self._metadata: tuple[tuple[str, str], ...] = (
            ((FORWARDED, replica_id),)
            + ((("authorization", f"Bearer {token}"),) if token else ()))
        self._credentials = credentials
        self._channels: OrderedDict[str, grpc.aio.Channel] = OrderedDict()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of a forwarded call: the mark, and this replica's API token (the
        caller's own was checked here; replicas of one service share the token)."""
        return self._metadata

    async def stub(self, record: SessionRecord) -> session_api_pb2_grpc.SessionApiStub | None:
        """A stub for the replica that runs ``record``, or ``None`` when it holds no
        live lease (or the lease names this very replica's address)."""
        rows = await asyncio.to_thread(self.store.replicas)
        address = owner_address(rows, record.replica_id, time.time())
        if address is None or address == self.store.address:
            return None
        return session_api_pb2_grpc.SessionApiStub(self._channel(address))

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is not None:
            self._channels.move_to_end(address)
            return channel
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(address, self._credentials,
                                              options=CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._channels[address] = channel
        while len(self._channels) > MAX_CHANNELS:
            _, oldest = self._channels.popitem(last=False)
            asyncio.get_running_loop().create_task(oldest.close())
        return channel

    # ------------------------------------------------------------------ the calls

    def runs_elsewhere(self, record: SessionRecord,
                       context: grpc.aio.ServicerContext) -> bool:
        """Whether a call about ``record`` goes to another replica, which runs it."""
        return (record.state in LIVE_STATES
                and record.replica_id != self.replica_id
                and not was_forwarded(context.invocation_metadata()))

    async def watch(
        self, request: session_api_pb2.WatchSessionRequest, record: SessionRecord,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[session_api_pb2.SessionUpdate]:
        """The owner's updates, relayed; if the owner is lost meanwhile, the end a
        survivor records for the session."""
        stub = await self.stub(record)
        if stub is not None:
            try:
                async for update in stub.WatchSession(request, metadata=self.metadata):
                    yield update
                    if update.kind == session_api_pb2.UPDATE_KIND_ENDED:
                        return
            except grpc.aio.AioRpcError as exc:
                await _unless_unreachable(exc, record, context)
        yield snapshot(UpdateKind.ENDED, stored_info(await self._lost(record, context)))

    async def cancel(self, request: session_api_pb2.CancelSessionRequest,
                     record: SessionRecord,
                     context: grpc.aio.ServicerContext) -> session_api_pb2.SessionInfo:
        """The owner's answer to the cancel; if the owner is lost, the session's end as
        a survivor records it (a cancel of a session that fails anyway)."""
        stub = await self.stub(record)
        if stub is not None:
            remaining = context.time_remaining()
            try:
                answer: session_api_pb2.SessionInfo = await stub.CancelSession(
                    request, metadata=self.metadata,
                    timeout=FORWARD_TIMEOUT if remaining is None
                    else min(remaining, FORWARD_TIMEOUT))
                return answer
            except grpc.aio.AioRpcError as exc:
                await _unless_unreachable(exc, record, context)
        return stored_info(await self._lost(record, context))

    async def _lost(self, record: SessionRecord,
                    context: grpc.aio.ServicerContext) -> SessionRecord:
        """The record of a session whose owner cannot be reached, once it has ended."""
        try:
            ended = await self._ended(record.session_id)
        except LookupError:
            await abort(context, not_found(f"No session '{record.session_id}'"))
        except Exception as exc:
            log.exception("session store read failed")
            await abort(context, ApiError(grpc.StatusCode.UNAVAILABLE,
                                          Reason.STORE_UNAVAILABLE, f"session store: {exc}"))
        if ended is None:
            await abort(context, ApiError(
                grpc.StatusCode.UNAVAILABLE, Reason.OWNER_UNREACHABLE,
                f"replica {record.replica_id}, which runs session {record.session_id!r}, "
                f"cannot be reached and has not been found lost within "
                f"{self.wait_for_loss:.0f} s"))
        return ended

    async def _ended(self, session_id: str) -> SessionRecord | None:
        """The session's record once it has ended; ``None`` if it still runs after
        :attr:`wait_for_loss`.

        :raises LookupError: the record is gone (pruned meanwhile).
        """
        deadline = time.monotonic() + self.wait_for_loss
        while True:
            record = await asyncio.to_thread(self.store.get, session_id, False)
            if record is None:
                raise LookupError(session_id)
            if record.state not in LIVE_STATES:
                return record
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.25)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), OrderedDict()
        for channel in channels:
            await channel.close()


async def _unless_unreachable(exc: grpc.aio.AioRpcError, record: SessionRecord,
                              context: grpc.aio.ServicerContext) -> None:
    """Pass the owner's answer on as it is, unless it says the owner is not there."""
    if exc.code() not in UNREACHABLE:
        await context.abort(exc.code(), exc.details() or "", exc.trailing_metadata() or None)
    log.warning("replica %s, which runs session %s, is unreachable (%s): waiting for its "
                "sessions to be failed", record.replica_id, record.session_id,
                exc.code().name)
