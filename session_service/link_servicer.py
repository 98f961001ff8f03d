"""The session service's end of the link: one stream per gateway.

Each stream's reader decodes what the gateway says (:mod:`aip_link.codec`) and hands it
through a dispatch table to the presence table and the session manager; its writer
drains a :class:`GatewayPeer`'s queue into batches bounded in bytes, one per stream
message, a larger message in fragments (:mod:`aip_link.codec`). A gateway's presence
snapshot may come in pages; it replaces what the replica knew of that gateway only once
the last page is in. When a gateway's link ends, its clients count as disconnected
after a grace period, unless the gateway comes back first. :class:`LinkHub` is the
session manager's :class:`~session_service.core.ports.GatewayPort`: the manager says what
it means (open, command, end) and the hub turns it into :mod:`aip_link.messages` on the
right queue.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import grpc

from aip_grpc import link_pb2, link_pb2_grpc
from aip_link import codec
from aip_link import messages as m
from aip_link.batching import BatchQueue
from aip_link.channel import MAX_MESSAGE_BYTES
from aip_link.dispatch import Inbound
from aip_link.fragments import FragmentError, Reassembly
from aip_link.sizes import size_hint
from aip_runtime import log_context
from aip_wire.frames import load_json
from aip_wire.vocab import CancelReason
from session_service import metrics
from session_service.core.decisions import SessionRejected
from session_service.core.manager import SessionManager
from session_service.core.session import Session
from session_service.presence import ClientRecord, Presence

log = logging.getLogger("aip.session.link")

#: The full name of the service, for health checks and reflection.
SERVICE_NAME: str = link_pb2.DESCRIPTOR.services_by_name["GatewayLink"].full_name


#: Submits remembered per gateway beyond which those of ended sessions are forgotten.
SUBMITS_KEPT = 4096


def cancel_refusal(body: m.CancelSession, session: Session, gateway_id: str,
                   created: Session | None) -> str | None:
    """Why a gateway's cancel must not touch ``session`` (``None``: it may).

    ``created`` is the session the cancel's submit created on this replica, if any: a
    cancel scoped to a submit ends that session only, never another with the same id
    (another client's, or one the submit was refused for). A cancel naming a requester
    ends only that requester's session, and a gateway cancels only sessions it submitted
    or whose device it serves.
    """
    if body.submit_id and created is not session:
        return f"submit {body.submit_id} of gateway {gateway_id} did not create it"
    if body.requester_id and body.requester_id != session.requester_id:
        return f"it belongs to {session.requester_id}, not {body.requester_id}"
    if gateway_id not in (session.origin_gateway, session.device_gateway):
        return f"gateway {gateway_id} neither submitted it nor serves its device"
    return None


class GatewayPeer:
    """One gateway's open stream: who it is and what waits to be written to it."""

    def __init__(self) -> None:
        self.gateway_id = ""
        self.queue: BatchQueue[m.SessionMessage] = BatchQueue(measure=size_hint)
        #: Loop time of the last batch from the gateway, for the silence check.
        self.heard_at = asyncio.get_running_loop().time()
        #: Closed because the gateway went silent, not because its stream ended.
        self.silent = False
        #: The pages of a presence snapshot received so far, until its last page.
        self.snapshot: list[ClientRecord] | None = None
        #: Why the stream ended, when it broke rather than closed.
        self.cause = ""

    def send(self, message: m.SessionMessage) -> bool:
        return self.queue.put(message)

    def close(self) -> None:
        self.queue.close()


class LinkHub:
    """The open gateway links of this replica, by gateway id; the manager's
    :class:`~session_service.core.ports.GatewayPort`."""

    def __init__(self) -> None:
        self.peers: dict[str, GatewayPeer] = {}

    def send(self, gateway_id: str, message: m.SessionMessage) -> bool:
        peer = self.peers.get(gateway_id)
        return peer.send(message) if peer is not None else False

    def open_session(self, gateway_id: str, session: Session) -> bool:
        return self.send(gateway_id, m.SessionOpened(
            session_id=session.session_id,
            task_name=session.task_name,
            device_id=session.device_id,
            requester_id=session.requester_id,
            requester_kind=session.requester_kind,
        ))

    def send_command(self, gateway_id: str, device_id: str, session_id: str,
                     frame_json: bytes) -> bool:
        return self.send(gateway_id, m.DeviceFrame(
            device_id=device_id, session_id=session_id, frame_json=frame_json,
        ))

    def end_session(self, gateway_id: str, session: Session, *, notify_requester: bool,
                    notify_device: bool, frame_json: bytes, active_sessions: int) -> bool:
        return self.send(gateway_id, m.TaskEnded(
            session_id=session.session_id,
            requester_id=session.requester_id,
            requester_kind=session.requester_kind,
            device_id=session.device_id,
            notify_requester=notify_requester,
            notify_device=notify_device,
            frame_json=frame_json,
            active_sessions=active_sessions,
        ))


def action_results_of(frame_json: bytes) -> Any:
    """The ``action_results`` of a device's ``command_results`` frame (``[]`` when it has
    none, ``None`` when the frame cannot be read)."""
    try:
        frame = load_json(frame_json)
    except ValueError:
        return None
    if not isinstance(frame, dict):
        return None
    results = frame.get("action_results")
    return [] if results is None else results


class GatewayLinkServicer(link_pb2_grpc.GatewayLinkServicer):
    def __init__(
        self,
        replica_id: str,
        hub: LinkHub,
        presence: Presence,
        manager: SessionManager,
        gateway_grace: float,
        silence_limit: float = 15.0,
    ) -> None:
        self.replica_id = replica_id
        self.silence_limit = silence_limit
        self.hub = hub
        self.presence = presence
        self.manager = manager
        self.gateway_grace = gateway_grace
        self._drops: dict[str, asyncio.TimerHandle] = {}
        #: The session each (gateway id, submit id) created, for cancels scoped to a
        #: submit; weak, so that forgotten sessions leave.
        self._submitted: weakref.WeakValueDictionary[tuple[str, int], Session] = \
            weakref.WeakValueDictionary()

    async def Connect(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> None:
        peer = GatewayPeer()
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(request_iterator, peer))
        connect = asyncio.current_task()
        assert connect is not None
        watchdog = loop.create_task(self._watch(peer, connect))
        writing: Any = None
        try:
            while True:
                batch = await peer.queue.next_batch()
                if batch is None:
                    break
                for writing in codec.encode_session_stream(batch):
                    await context.write(writing)
        except asyncio.CancelledError:
            if not peer.silent:
                raise
        except Exception as exc:
            # Measured only now: ByteSize() costs a serialization.
            size = writing.ByteSize() if writing is not None else 0
            peer.cause = f"writing a stream message of {size} bytes failed: {exc!r}"
            log.warning("link to gateway %s: %s", peer.gateway_id or "?", peer.cause)
        finally:
            peer.close()
            reader.cancel()
            watchdog.cancel()
            if peer.gateway_id and self.hub.peers.get(peer.gateway_id) is peer:
                del self.hub.peers[peer.gateway_id]
                metrics.GATEWAYS.set(len(self.hub.peers))
                log.warning(
                    "link from gateway %s closed%s; its clients count as disconnected in "
                    "%gs unless it comes back", peer.gateway_id,
                    f" ({peer.cause})" if peer.cause else "", self.gateway_grace,
                )
                self._schedule_drop(peer.gateway_id)

    async def _watch(self, peer: GatewayPeer, connect: asyncio.Task[Any]) -> None:
        """End the stream of a gateway that sent nothing, not even a ping, for the
        silence limit: after a partition no reset may ever arrive, and a write to it may
        block for as long as TCP keeps retrying. Cancelling the stream's task is the one
        way out of such a write."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.silence_limit / 4)
            if loop.time() - peer.heard_at > self.silence_limit:
                log.warning("gateway %s sent nothing for %gs: closing its link",
                            peer.gateway_id or "?", self.silence_limit)
                peer.silent = True
                peer.close()
                connect.cancel()
                return

    async def _read(self, request_iterator: Any, peer: GatewayPeer) -> None:
        inbound = self._inbound(peer)
        joiner = Reassembly(MAX_MESSAGE_BYTES)
        loop = asyncio.get_running_loop()
        try:
            async for batch in request_iterator:
                peer.heard_at = loop.time()
                inbound.dispatch(codec.decode_gateway_batch(batch, joiner))
        except asyncio.CancelledError:
            pass
        except FragmentError as exc:
            peer.cause = f"protocol error: {exc}"
            log.warning("gateway %s broke the link protocol, closing its link: %s",
                        peer.gateway_id or "?", exc)
        except Exception as exc:
            peer.cause = f"reading failed: {exc!r}"
            log.warning("link read from gateway %s failed: %r", peer.gateway_id or "?", exc)
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
            self.manager.client_offline(record.client_id, record.client_type)

    # ------------------------------------------------------------------ messages

    def _inbound(self, peer: GatewayPeer) -> Inbound:
        manager = self.manager
        presence = self.presence

        def command_results(body: m.CommandResults) -> None:
            manager.command_results(body.session_id, body.device_id, body.response_id,
                                    action_results_of(body.frame_json))

        def client_offline(body: m.ClientOffline) -> None:
            record = presence.offline(body.client_id, body.gateway_id)
            if record is not None or presence.get(body.client_id) is None:
                # Unless the client is connected through another gateway by now.
                manager.client_offline(body.client_id, body.client_type)

        def ping(body: m.Ping) -> None:
            peer.send(m.Pong(body.nonce, manager.active))

        return Inbound({
            m.CommandResults: command_results,
            m.TaskSubmit: lambda body: self._submit(peer, body),
            m.ClientOnline: lambda body: presence.online(ClientRecord.of(body.client)),
            m.ClientOffline: client_offline,
            m.CancelSession: lambda body: self._cancel(peer, body),
            m.DeviceInfoUpdate: lambda body: presence.update_info(body.device_id,
                                                                  body.device_info),
            m.Ping: ping,
            m.Hello: lambda body: self._hello(peer, body),
            m.PresencePage: lambda body: self._presence_page(peer, body),
        }, name="gateway link")

    def _hello(self, peer: GatewayPeer, hello: m.Hello) -> None:
        gateway_id = hello.gateway_id
        previous = self.hub.peers.get(gateway_id)
        if previous is not None and previous is not peer:
            previous.close()
        peer.gateway_id = gateway_id
        self.hub.peers[gateway_id] = peer
        self._cancel_drop(gateway_id)
        metrics.GATEWAYS.set(len(self.hub.peers))
        records = [ClientRecord.of(client) for client in hello.clients]
        if hello.more:
            # The gateway sends the rest of its snapshot before anything else.
            peer.snapshot = records
            return
        self._replace_presence(peer, records)

    def _presence_page(self, peer: GatewayPeer, page: m.PresencePage) -> None:
        if peer.snapshot is None:
            log.warning("gateway %s sent a presence page outside a snapshot: skipped",
                        peer.gateway_id or "?")
            return
        peer.snapshot.extend(ClientRecord.of(client) for client in page.clients)
        if page.last:
            records, peer.snapshot = peer.snapshot, None
            self._replace_presence(peer, records)

    def _replace_presence(self, peer: GatewayPeer, records: list[ClientRecord]) -> None:
        """Apply a gateway's whole snapshot, then answer its hello. Only the whole
        snapshot may say which of its clients are gone: a client of a later page is not.
        """
        gone = self.presence.replace_gateway(peer.gateway_id, records)
        for record in gone:
            self.manager.client_offline(record.client_id, record.client_type)
        log.info("gateway %s linked with %d client(s)", peer.gateway_id, len(records))
        peer.send(m.Welcome(self.replica_id, self.manager.active))

    def _cancel(self, peer: GatewayPeer, body: m.CancelSession) -> None:
        created = self._submitted.pop((peer.gateway_id, body.submit_id), None) \
            if body.submit_id else None
        session = self.manager.sessions.get(body.session_id)
        if session is None:
            return
        refusal = cancel_refusal(body, session, peer.gateway_id, created)
        if refusal is not None:
            log.warning("cancel of session %s (%s) from gateway %s ignored: %s",
                        body.session_id, body.reason, peer.gateway_id, refusal)
            return
        self.manager.cancel(body.session_id, body.reason or CancelReason.REQUESTED)

    def _remember_submit(self, gateway_id: str, submit_id: int, session: Session) -> None:
        submitted = self._submitted
        if len(submitted) >= SUBMITS_KEPT:
            for key, old in list(submitted.items()):
                if not old.running:
                    del submitted[key]
        submitted[(gateway_id, submit_id)] = session

    def _submit(self, peer: GatewayPeer, body: m.TaskSubmit) -> None:
        with log_context.bound(session_id=body.session_id, client_id=body.requester_id or None,
                               device_id=body.device_id or None):
            self._submit_bound(peer, body)

    def _submit_bound(self, peer: GatewayPeer, body: m.TaskSubmit) -> None:
        try:
            session = self.manager.submit(
                session_id=body.session_id,
                task_name=body.task_name,
                request=body.request,
                device_id=body.device_id,
                requester_id=body.requester_id,
                requester_kind=body.requester_kind,
                origin_gateway=body.gateway_id or peer.gateway_id,
                agent_name=body.agent or None,
                model=body.model,
                traceparent=body.traceparent,
            )
        except SessionRejected as exc:
            self._submitted.pop((peer.gateway_id, body.submit_id), None)
            self._answer(peer, body, exc)
            return
        self._remember_submit(peer.gateway_id, body.submit_id, session)
        # Acked once the session's record is durable; the manager queues the acceptance
        # before the agent can queue its first command.
        self.manager.accept(session, lambda refusal: self._answer(peer, body, refusal))

    def _answer(self, peer: GatewayPeer, body: m.TaskSubmit,
                refusal: SessionRejected | None) -> None:
        if refusal is None:
            peer.send(m.TaskAccepted(body.submit_id, body.session_id, self.manager.active))
            return
        log.warning("task %s refused: %s", body.session_id, refusal)
        peer.send(m.TaskRejected(body.submit_id, body.session_id, str(refusal), refusal.code))


def add_to_server(servicer: GatewayLinkServicer, server: grpc.aio.Server) -> None:
    link_pb2_grpc.add_GatewayLinkServicer_to_server(servicer, server)
