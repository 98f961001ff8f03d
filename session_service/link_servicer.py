"""The session service's end of the link: one stream per gateway.

The stream's reader applies what the gateway says (presence, tasks, results, cancels) to
the presence table and the session manager; its writer drains a :class:`GatewayPeer`'s
buffer into one batch per stream message. When a gateway's link ends, its clients count
as disconnected after a grace period, unless the gateway comes back first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import orjson

from aip_grpc import link_pb2, link_pb2_grpc
from session_service import metrics
from session_service.presence import KIND_NAMES, ClientRecord, Presence
from session_service.sessions import SessionManager, SessionRejected

log = logging.getLogger("aip.session.link")


class GatewayPeer:
    """Messages waiting to be written to one gateway's stream."""

    def __init__(self) -> None:
        self.gateway_id = ""
        self._buffer: list[link_pb2.SessionMessage] = []
        self._wakeup = asyncio.Event()
        self.closed = False

    def send(self, message: link_pb2.SessionMessage) -> bool:
        if self.closed:
            return False
        self._buffer.append(message)
        self._wakeup.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def next_batch(self) -> list[link_pb2.SessionMessage] | None:
        """Everything buffered, once there is something; ``None`` once closed."""
        while not self._buffer:
            if self.closed:
                return None
            await self._wakeup.wait()
            self._wakeup.clear()
            # Let the rest of this loop turn's messages join the batch.
            await asyncio.sleep(0)
        batch, self._buffer = self._buffer, []
        return batch


class LinkHub:
    """The open gateway links of this replica, by gateway id."""

    def __init__(self) -> None:
        self.peers: dict[str, GatewayPeer] = {}

    def send(self, gateway_id: str, message: link_pb2.SessionMessage) -> bool:
        peer = self.peers.get(gateway_id)
        return peer.send(message) if peer is not None else False


class GatewayLinkServicer(link_pb2_grpc.GatewayLinkServicer):
    def __init__(
        self,
        replica_id: str,
        hub: LinkHub,
        presence: Presence,
        manager: SessionManager,
        gateway_grace: float,
    ) -> None:
        self.replica_id = replica_id
        self.hub = hub
        self.presence = presence
        self.manager = manager
        self.gateway_grace = gateway_grace
        self._drops: dict[str, asyncio.TimerHandle] = {}

    async def Connect(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> None:
        peer = GatewayPeer()
        reader = asyncio.get_running_loop().create_task(self._read(request_iterator, peer))
        try:
            while True:
                batch = await peer.next_batch()
                if batch is None:
                    break
                await context.write(link_pb2.SessionBatch(messages=batch))
        finally:
            peer.close()
            reader.cancel()
            if peer.gateway_id and self.hub.peers.get(peer.gateway_id) is peer:
                del self.hub.peers[peer.gateway_id]
                metrics.GATEWAYS.set(len(self.hub.peers))
                log.warning(
                    "link from gateway %s closed; its clients count as disconnected in %gs "
                    "unless it comes back", peer.gateway_id, self.gateway_grace,
                )
                self._schedule_drop(peer.gateway_id)

    async def _read(self, request_iterator: Any, peer: GatewayPeer) -> None:
        try:
            async for batch in request_iterator:
                for message in batch.messages:
                    self._apply(peer, message)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            log.debug("link read from %s ended: %r", peer.gateway_id or "?", exc)
        finally:
            peer.close()

    # ------------------------------------------------------------------ gateway death

    def _schedule_drop(self, gateway_id: str) -> None:
        self._cancel_drop(gateway_id)
        self._drops[gateway_id] = asyncio.get_running_loop().call_later(
            self.gateway_grace, self._drop_gateway, gateway_id
        )

    def _cancel_drop(self, gateway_id: str) -> None:
        handle = self._drops.pop(gateway_id, None)
        if handle is not None:
            handle.cancel()

    def _drop_gateway(self, gateway_id: str) -> None:
        self._drops.pop(gateway_id, None)
        if gateway_id in self.hub.peers:
            return
        gone = self.presence.drop_gateway(gateway_id)
        log.warning("gateway %s did not come back: %d client(s) disconnected", gateway_id,
                    len(gone))
        for record in gone:
            self.manager.client_offline(record.client_id, record.kind)

    # ------------------------------------------------------------------ messages

    def _apply(self, peer: GatewayPeer, message: link_pb2.GatewayMessage) -> None:
        which = message.WhichOneof("body")
        if which == "command_results":
            body = message.command_results
            try:
                results = orjson.loads(body.action_results_json)
            except orjson.JSONDecodeError:
                results = None
            self.manager.command_results(body.session_id, body.device_id, body.response_id,
                                         results)
        elif which == "task_submit":
            self._submit(peer, message.task_submit)
        elif which == "client_online":
            self.presence.online(ClientRecord.from_proto(message.client_online.client))
        elif which == "client_offline":
            body = message.client_offline
            record = self.presence.offline(body.client_id, body.gateway_id)
            if record is not None or self.presence.get(body.client_id) is None:
                # Unless the client is connected through another gateway by now.
                self.manager.client_offline(body.client_id, KIND_NAMES.get(body.kind, "device"))
        elif which == "cancel_session":
            body = message.cancel_session
            self.manager.cancel(body.session_id, body.reason or "requested")
        elif which == "device_info_update":
            body = message.device_info_update
            try:
                info = orjson.loads(body.device_info_json)
            except orjson.JSONDecodeError:
                info = {}
            self.presence.update_info(body.device_id, info if isinstance(info, dict) else {})
        elif which == "ping":
            peer.send(link_pb2.SessionMessage(pong=link_pb2.Pong(
                nonce=message.ping.nonce, active_sessions=self.manager.active
            )))
        elif which == "hello":
            self._hello(peer, message.hello)

    def _hello(self, peer: GatewayPeer, hello: link_pb2.Hello) -> None:
        gateway_id = hello.gateway_id
        previous = self.hub.peers.get(gateway_id)
        if previous is not None and previous is not peer:
            previous.close()
        peer.gateway_id = gateway_id
        self.hub.peers[gateway_id] = peer
        self._cancel_drop(gateway_id)
        metrics.GATEWAYS.set(len(self.hub.peers))
        records = [ClientRecord.from_proto(client) for client in hello.clients]
        gone = self.presence.replace_gateway(gateway_id, records)
        for record in gone:
            self.manager.client_offline(record.client_id, record.kind)
        log.info("gateway %s linked with %d client(s)", gateway_id, len(records))
        peer.send(link_pb2.SessionMessage(welcome=link_pb2.Welcome(
            replica_id=self.replica_id, active_sessions=self.manager.active
        )))

    def _submit(self, peer: GatewayPeer, body: link_pb2.TaskSubmit) -> None:
        try:
            session = self.manager.submit(
                session_id=body.session_id,
                task_name=body.task_name,
                request=body.request,
                device_id=body.device_id,
                requester_id=body.requester_id,
                requester_kind=body.requester_kind,
                origin_gateway=body.gateway_id or peer.gateway_id,
            )
        except SessionRejected as exc:
            log.warning("task %s refused: %s", body.session_id, exc)
            peer.send(link_pb2.SessionMessage(task_rejected=link_pb2.TaskRejected(
                submit_id=body.submit_id, session_id=body.session_id, error=str(exc),
                code=exc.code,
            )))
            return
        # The acceptance is queued before the agent can queue its first command.
        peer.send(link_pb2.SessionMessage(task_accepted=link_pb2.TaskAccepted(
            submit_id=body.submit_id, session_id=body.session_id,
            active_sessions=self.manager.active,
        )))
        self.manager.start(session)
