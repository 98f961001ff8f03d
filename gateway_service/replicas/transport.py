"""The gateway's end of the link to one session-service replica: the transport only.

What the gateway knows of the replica behind a link (its id, load, draining, lost
sessions) lives in :mod:`gateway_service.replicas.pool`; this module only moves messages.

A :class:`ReplicaLink` keeps one bidirectional stream open to its replica, reconnecting
with jittered exponential backoff. What it sends is queued in a
:class:`~aip_link.batching.BatchQueue` and written one batch per stream message; what it
receives is decoded by :mod:`aip_link.codec` and handed, in order, to the owner. Batches
are bounded in bytes and a larger message goes in fragments, both ways; the presence
snapshot that opens every stream is paged likewise (:mod:`aip_link.sizes`). It pings
the replica every ``ping_interval`` seconds and drops a stream that brings nothing back
for ``silence_limit`` seconds, which TCP alone may take minutes to notice.

A broken link is logged as a warning with its cause; so is the first failed attempt to
bring it back, and then one attempt every :data:`OUTAGE_WARNING_INTERVAL` seconds while
the outage lasts, rather than every retry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from aip_grpc import link_pb2_grpc
from aip_link import codec
from aip_link.batching import BatchQueue, pump
from aip_link.channel import CHANNEL_OPTIONS, LINK_BATCH_BYTES, MAX_MESSAGE_BYTES
from aip_link.fragments import FragmentError, Reassembly
from aip_link.messages import GatewayMessage, Hello, Ping, SessionMessage
from aip_link.sizes import presence_pages, size_hint

log = logging.getLogger("aip.gateway.link")

#: Seconds between two warnings about the same outage of a link.
OUTAGE_WARNING_INTERVAL = 30.0


@dataclass(frozen=True, slots=True)
class LinkSecurity:
    """How to reach the replicas: TLS material, the API token (``token``, for the
    replicas' SessionApi) and the link token (for GatewayLink/Connect), all optional."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None
    token: str | None = None
    link_token: str | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    @property
    def link_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.link_token}"),) if self.link_token else ()

    def channel(self, address: str) -> grpc.aio.Channel:
        if self.ca is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        credentials = grpc.ssl_channel_credentials(self.ca, self.key, self.cert)
        options = list(CHANNEL_OPTIONS)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(address, credentials, options=options)


class LinkOwner(Protocol):
    def hello(self) -> Hello: ...
    def on_link_up(self, link: ReplicaLink) -> None: ...
    def on_link_messages(self, link: ReplicaLink, batch: Sequence[SessionMessage]) -> None: ...
    def on_link_lost(self, link: ReplicaLink, cause: str) -> None: ...


class LinkSilent(Exception):
    """The replica sent nothing, not even a pong, for longer than the silence limit."""


class Outage:
    """The failed attempts to (re)open one link since it was last up, and which of them
    deserve a warning: the first, then one every ``every`` seconds."""

    __slots__ = ("_warned_at", "every", "failures")

    def __init__(self, every: float = OUTAGE_WARNING_INTERVAL) -> None:
        self.every = every
        self.failures = 0
        self._warned_at: float | None = None

    def failed(self, now: float) -> bool:
        """Count one failed attempt at loop time ``now``; whether to warn about it."""
        self.failures += 1
        if self._warned_at is None or now - self._warned_at >= self.every:
            self._warned_at = now
            return True
        return False

    def end(self) -> int:
        """The link is up (or lost anew): start over; the failures the outage counted."""
        failures, self.failures, self._warned_at = self.failures, 0, None
        return failures


class ReplicaLink:
    """The channel to one replica and the link stream on it; no replica state."""

    def __init__(
        self,
        address: str,
        owner: LinkOwner,
        *,
        backoff_min: float = 0.2,
        backoff_max: float = 5.0,
        ping_interval: float = 5.0,
        silence_limit: float = 15.0,
        presence_linger: float = 0.0,
        security: LinkSecurity | None = None,
    ) -> None:
        self.address = address
        self.security = security or LinkSecurity()
        #: Call metadata of API requests to the replica (the API token).
        self.metadata = self.security.metadata
        self._owner = owner
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._ping_interval = ping_interval
        self._silence_limit = silence_limit
        self._presence_linger = presence_linger
        # Channels belong to the event loop they are created on, hence made in start().
        self.channel: grpc.aio.Channel | None = None
        self._stub: link_pb2_grpc.GatewayLinkStub | None = None
        #: The stream is open and the replica has answered our hello.
        self.healthy = False
        #: Why the last stream ended or could not be opened.
        self.last_error = ""
        # Closed until a stream is open: sends fail fast while the link is down.
        self._queue: BatchQueue[GatewayMessage] = BatchQueue()
        self._queue.close()
        self._nonces = itertools.count(1)
        self._outage = Outage()
        #: Loop time of the last batch from the replica, for the silence check.
        self._heard_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ReplicaLink {self.address} healthy={self.healthy}>"

    def start(self) -> None:
        self.channel = self.security.channel(self.address)
        self._stub = link_pb2_grpc.GatewayLinkStub(self.channel)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"link-{self.address}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.channel is not None:
            await self.channel.close(grace=None)

    def send(self, message: GatewayMessage) -> bool:
        """Queue one message for the replica; ``False`` when the link is down."""
        return self._queue.put(message)

    def announce(self, message: GatewayMessage) -> bool:
        """Queue a presence message (a client came, went or changed its info): it may
        wait up to ``presence_linger`` seconds to share a stream message with others,
        and goes out at once with the next message that may not wait."""
        return self._queue.put(message, lazy=True)

    async def _run(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._stream()
                cause = "the replica closed the link"
            except asyncio.CancelledError:
                self.healthy = False
                raise
            except grpc.aio.AioRpcError as exc:
                cause = f"{exc.code().name}: {exc.details()}"
            except LinkSilent as exc:
                cause = str(exc)
            except FragmentError as exc:
                cause = f"protocol error: {exc}"
            except Exception as exc:
                log.exception("link to %s failed unexpectedly", self.address)
                cause = repr(exc)
            was_healthy = self.healthy
            self.healthy = False
            self.last_error = cause
            if was_healthy:
                attempt = 0
                self._outage.end()
                log.warning("link to replica %s lost: %s", self.address, cause)
                self._owner.on_link_lost(self, cause)
            elif self._outage.failed(loop.time()):
                log.warning("link to replica %s not established (%d failed attempt(s) so "
                            "far): %s", self.address, self._outage.failures, cause)
            else:
                log.debug("link to replica %s not established: %s", self.address, cause)
            delay = min(self._backoff_max, self._backoff_min * 2**attempt)
            attempt = min(attempt + 1, 16)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        """Hand every batch the replica sends to the owner until the stream ends."""
        loop = asyncio.get_running_loop()
        joiner = Reassembly(MAX_MESSAGE_BYTES)
        first = True
        while True:
            batch = await call.read()
            if batch is grpc.aio.EOF:
                return
            self._heard_at = loop.time()
            messages = codec.decode_session_batch(batch, joiner)
            if first:
                first = False
                self.healthy = True
                self.last_error = ""
                failures = self._outage.end()
                log.info("link to replica %s up%s", self.address,
                         f" after {failures} failed attempt(s)" if failures else "")
                self._owner.on_link_up(self)
            self._owner.on_link_messages(self, messages)

    async def _stream(self) -> None:
        assert self._stub is not None
        call = self._stub.Connect(metadata=self.security.link_metadata)
        # Take the presence snapshot and open the queue in the same step, so that a
        # client registering meanwhile is either in the snapshot or in the queue after
        # its last page.
        queue: BatchQueue[GatewayMessage] = BatchQueue(
            presence_pages(self._owner.hello(), LINK_BATCH_BYTES), measure=size_hint,
            linger=self._presence_linger)
        self._queue = queue
        loop = asyncio.get_running_loop()
        self._heard_at = loop.time()
        writer = loop.create_task(self._write(queue, call))
        # The reader and the pinger race: the stream ends when either does. The pinger
        # also watches for silence, which is cheaper than a timeout around every read.
        reader = loop.create_task(self._read(call))
        pinger = loop.create_task(self._ping(queue))
        try:
            await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
            done = reader if reader.done() else pinger
            done.result()  # the reader's end, or the pinger's LinkSilent
        finally:
            queue.close()
            for task in (writer, reader, pinger):
                task.cancel()
            call.cancel()

    async def _write(
        self, queue: BatchQueue[GatewayMessage], call: grpc.aio.StreamStreamCall
    ) -> None:
        writing: Any = None

        async def write(item: Any) -> None:
            nonlocal writing
            writing = item
            await call.write(item)

        try:
            await pump(queue, codec.encode_gateway_stream, write)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke: its reader learns from the call
            # Measured only now: ByteSize() costs a serialization.
            size = writing.ByteSize() if writing is not None else 0
            log.warning("link write to %s failed, writing a stream message of %d bytes: %r",
                        self.address, size, exc)
            call.cancel()

    async def _ping(self, queue: BatchQueue[GatewayMessage]) -> None:
        """Ping every ``ping_interval``; raise :class:`LinkSilent` once nothing at all
        has come back for ``silence_limit`` seconds."""
        loop = asyncio.get_running_loop()
        while not queue.closed:
            if loop.time() - self._heard_at > self._silence_limit:
                raise LinkSilent(f"nothing from the replica for {self._silence_limit:g}s")
            queue.put(Ping(next(self._nonces)))
            await asyncio.sleep(min(self._ping_interval, self._silence_limit / 2))
