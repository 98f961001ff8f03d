"""The gateway's end of the link to one session-service replica.

A :class:`ReplicaLink` keeps one bidirectional stream open to its replica, reconnecting
with jittered exponential backoff. Outgoing messages are buffered and written as one
batch per stream message, so a burst of frames costs one gRPC message instead of many.
Incoming batches are handed, in order, to the owner's ``on_link_batch``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from aip_grpc import link_pb2, link_pb2_grpc, session_api_pb2_grpc

log = logging.getLogger("aip.gateway.link")

#: Channel options shared by both ends: large frames, and keepalives that find a dead
#: peer within seconds even when the stream is idle.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
]


@dataclass(frozen=True, slots=True)
class LinkSecurity:
    """How to reach the replicas: TLS material and the shared token, all optional."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None
    token: str | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self, address: str) -> grpc.aio.Channel:
        if self.ca is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        credentials = grpc.ssl_channel_credentials(self.ca, self.key, self.cert)
        options = list(CHANNEL_OPTIONS)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(address, credentials, options=options)


class LinkOwner(Protocol):
    def hello_message(self) -> link_pb2.GatewayMessage: ...
    def on_link_up(self, link: ReplicaLink) -> None: ...
    def on_link_batch(self, link: ReplicaLink, batch: link_pb2.SessionBatch) -> None: ...
    def on_link_lost(self, link: ReplicaLink, cause: str) -> None: ...


class ReplicaLink:
    """One replica: its channel, the link stream on it, and the load it reports."""

    def __init__(
        self,
        address: str,
        owner: LinkOwner,
        *,
        backoff_min: float = 0.2,
        backoff_max: float = 5.0,
        security: LinkSecurity | None = None,
    ) -> None:
        self.address = address
        self.security = security or LinkSecurity()
        #: Call metadata every request to the replica carries (its bearer token).
        self.metadata = self.security.metadata
        self._owner = owner
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        # Channels belong to the event loop they are created on, hence made in start().
        self.channel: grpc.aio.Channel | None = None
        self._stub: link_pb2_grpc.GatewayLinkStub | None = None
        self.api: session_api_pb2_grpc.SessionApiStub | None = None
        #: The stream is open and the replica has answered our hello.
        self.healthy = False
        #: Messages are being buffered for the current stream (from the hello on).
        self._accepting = False
        self.replica_id = ""
        self.active_sessions = 0
        #: The replica refused a task because it is shutting down: place none there.
        self.draining = False
        #: Sessions of this replica already ended for their requesters as lost with the
        #: link; if the replica was only cut off, their own end must not be delivered.
        self.lost_sessions: set[str] = set()
        self.last_error = ""
        self._buffer: list[link_pb2.GatewayMessage] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ReplicaLink {self.address} healthy={self.healthy}>"

    def start(self) -> None:
        self.channel = self.security.channel(self.address)
        self._stub = link_pb2_grpc.GatewayLinkStub(self.channel)
        self.api = session_api_pb2_grpc.SessionApiStub(self.channel)
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

    def send(self, message: link_pb2.GatewayMessage) -> bool:
        """Queue one message for the replica; ``False`` when the link is down."""
        if not self._accepting:
            return False
        self._buffer.append(message)
        self._wakeup.set()
        return True

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._stream()
                cause = "the replica closed the link"
            except asyncio.CancelledError:
                self._accepting = self.healthy = False
                raise
            except grpc.aio.AioRpcError as exc:
                cause = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:
                log.exception("link to %s failed unexpectedly", self.address)
                cause = repr(exc)
            was_healthy = self.healthy
            self._accepting = self.healthy = False
            self._buffer.clear()
            self.last_error = cause
            if was_healthy:
                attempt = 0
                log.warning("link to replica %s lost: %s", self.address, cause)
                self._owner.on_link_lost(self, cause)
            else:
                log.debug("link to replica %s not established: %s", self.address, cause)
            delay = min(self._backoff_max, self._backoff_min * 2**attempt)
            attempt = min(attempt + 1, 16)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _stream(self) -> None:
        assert self._stub is not None
        call = self._stub.Connect(metadata=self.metadata)
        writer: asyncio.Task[None] | None = None
        try:
            # Take the presence snapshot and start buffering in the same step, so that a
            # client registering meanwhile is either in the hello or in the buffer.
            self._buffer = [self._owner.hello_message()]
            self._accepting = True
            writer = asyncio.get_running_loop().create_task(self._write(call))
            self._wakeup.set()
            first = await call.read()
            if first is grpc.aio.EOF:
                return
            self.healthy = True
            self.draining = False
            self.last_error = ""
            log.info("link to replica %s up", self.address)
            self._owner.on_link_up(self)
            self._owner.on_link_batch(self, first)
            while True:
                batch = await call.read()
                if batch is grpc.aio.EOF:
                    return
                self._owner.on_link_batch(self, batch)
        finally:
            self._accepting = False
            if writer is not None:
                writer.cancel()
            call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                await self._wakeup.wait()
                # One more turn of the loop lets whatever else is ready this turn (other
                # sockets' frames) join the batch: a stream message costs the same for one
                # frame or fifty.
                await asyncio.sleep(0)
                self._wakeup.clear()
                while self._buffer:
                    batch, self._buffer = self._buffer, []
                    await call.write(link_pb2.GatewayBatch(messages=batch))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("link write to %s failed: %r", self.address, exc)
            call.cancel()
