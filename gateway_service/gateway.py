"""The gateway's shared state and its side of the link.

:class:`Gateway` holds the client registry, the session routes (which replica owns a
session, who asked for it, which device runs it) and the links to the replicas. It turns
client events into link messages and link messages into frames for clients. Frame
handling per client lives in :mod:`gateway_service.handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from aip_grpc import link_pb2, session_api_pb2
from aip_wire import frames
from gateway_service import metrics
from gateway_service.limits import TokenBucket
from gateway_service.link import LinkSecurity, ReplicaLink
from gateway_service.registry import ClientRegistry, Connection, Outbox
from gateway_service.replicas import ReplicaResolver
from gateway_service.rules import (
    CLOSE_DUPLICATE,
    CLOSE_REPLACED,
    CLOSE_SERVICE_RESTART,
    CLOSE_SILENT,
    CLOSE_TOO_SLOW,
    Refusal,
    Registration,
    TaskPlan,
)
from gateway_service.settings import GatewaySettings

log = logging.getLogger("aip.gateway")

KIND_TO_PROTO = {
    frames.DEVICE: link_pb2.CLIENT_KIND_DEVICE,
    frames.CONSTELLATION: link_pb2.CLIENT_KIND_CONSTELLATION,
}
REQUESTER_OF_KIND = {
    frames.DEVICE: link_pb2.REQUESTER_KIND_DEVICE,
    frames.CONSTELLATION: link_pb2.REQUESTER_KIND_CONSTELLATION,
}


class TaskError(Exception):
    """A task that cannot be started; ``str(err)`` is told to the requester.

    ``http_status`` is what the HTTP API answers with for it.
    """

    def __init__(self, message: str, http_status: int = 409, code: str = "") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code


#: HTTP statuses for the replicas' rejection codes.
REJECTION_STATUS = {"exists": 409, "not_found": 404, "invalid": 400, "limit": 429,
                    "draining": 503}


#: Seconds a link remembers the sessions it reported lost, after it is back up.
LOST_SESSION_MEMORY = 60.0

NO_REPLICA = "No session service replica is reachable; try again later"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked for a session: a client's id and kind (link RequesterKind) and, for a
    WebSocket client on this gateway, its connection."""

    client_id: str
    kind: int
    conn: Connection | None = None

    @classmethod
    def of(cls, conn: Connection) -> Requester:
        return cls(conn.client_id, REQUESTER_OF_KIND[conn.kind], conn)


HTTP_REQUESTER = Requester("http", link_pb2.REQUESTER_KIND_HTTP)


@dataclass(eq=False, slots=True)
class Route:
    """A running session as the gateway sees it."""

    session_id: str
    task_name: str
    link: ReplicaLink
    requester: Requester
    device_id: str
    device: Connection | None


@dataclass(eq=False, slots=True)
class PendingSubmit:
    plan: TaskPlan
    link: ReplicaLink
    requester: Requester
    future: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def link_security(settings: GatewaySettings) -> LinkSecurity:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return LinkSecurity(
        ca=read(settings.session_tls_ca),
        cert=read(settings.session_tls_cert),
        key=read(settings.session_tls_key),
        server_name=settings.session_tls_server_name,
        token=settings.session_token,
    )


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.gateway_id = settings.gateway_id
        self.registry = ClientRegistry()
        self.routes: dict[str, Route] = {}
        self._links: dict[str, ReplicaLink] = {}
        self._resolver = ReplicaResolver(settings.session_addresses())
        self._security = link_security(settings)
        self._resolve_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        #: Set on SIGTERM: no new registrations, clients told to reconnect elsewhere.
        self.draining = False
        self._pending: dict[int, PendingSubmit] = {}
        self._submit_ids = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.refresh_replicas()
        loop = asyncio.get_running_loop()
        self._resolve_task = loop.create_task(self._keep_resolving())
        self._sweep_task = loop.create_task(self._evict_silent())

    async def stop(self) -> None:
        for task in (self._resolve_task, self._sweep_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(link.stop() for link in self._links.values()))

    async def _evict_silent(self) -> None:
        """Evict clients that sent nothing for longer than the silence limit."""
        limit = self.settings.silence_limit
        while True:
            await asyncio.sleep(min(5.0, limit / 4))
            horizon = time.monotonic() - limit
            for conn in self.registry:
                if conn.last_seen < horizon:
                    log.warning(
                        "[WS] %s sent nothing for %.0fs: evicting it", conn.client_id, limit
                    )
                    # Unregister first: a vanished peer may never finish the close.
                    self.unregister(conn)
                    conn.close(CLOSE_SILENT, f"no frame for {limit:g}s")

    async def drain(self, timeout: float) -> None:
        """Stop taking clients, flush what is queued for them, then close them with 1012
        so that they reconnect (to another gateway, or to this one once restarted)."""
        self.draining = True
        connections = list(self.registry)
        log.info("draining: flushing and closing %d client(s)", len(connections))
        if connections:
            await asyncio.gather(*(conn.outbox.drain(timeout) for conn in connections))
        for conn in connections:
            self.unregister(conn)
            conn.close(CLOSE_SERVICE_RESTART, "gateway restarting; reconnect")

    @property
    def links(self) -> list[ReplicaLink]:
        return list(self._links.values())

    async def _keep_resolving(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resolve_interval)
            try:
                await self.refresh_replicas()
            except Exception:
                log.exception("refreshing the replica list failed")

    async def refresh_replicas(self) -> None:
        """Open a link to each replica address found, close those no longer found."""
        addresses = await self._resolver.resolve()
        for address in addresses:
            if address not in self._links:
                log.info("session-service replica found at %s", address)
                link = ReplicaLink(
                    address,
                    self,
                    backoff_min=self.settings.link_backoff_min,
                    backoff_max=self.settings.link_backoff_max,
                    security=self._security,
                )
                self._links[address] = link
                link.start()
        for address in [a for a in self._links if a not in addresses]:
            link = self._links.pop(address)
            was_healthy = link.healthy
            log.info("session-service replica %s is gone from the replica list", address)
            await link.stop()
            if was_healthy:
                self.on_link_lost(link, "removed from the replica list")

    def healthy_links(self) -> list[ReplicaLink]:
        return [link for link in self._links.values() if link.healthy]

    def pick_link(self) -> ReplicaLink | None:
        """The healthy, non-draining replica with the fewest active sessions."""
        healthy = [link for link in self.healthy_links() if not link.draining]
        if not healthy:
            return None
        return min(healthy, key=lambda link: link.active_sessions)

    def broadcast(self, message: link_pb2.GatewayMessage) -> None:
        for link in self._links.values():
            link.send(message)

    # ------------------------------------------------------------------ presence

    def _presence(self, conn: Connection) -> link_pb2.ClientPresence:
        return link_pb2.ClientPresence(
            client_id=conn.client_id,
            kind=KIND_TO_PROTO[conn.kind],
            platform=conn.platform,
            device_info_json=frames.dumps(conn.device_info),
            gateway_id=self.gateway_id,
        )

    def hello_message(self) -> link_pb2.GatewayMessage:
        return link_pb2.GatewayMessage(
            hello=link_pb2.Hello(
                gateway_id=self.gateway_id,
                clients=[self._presence(conn) for conn in self.registry],
            )
        )

    def register(
        self,
        registration: Registration,
        outbox_writer: Any,
        close: Any,
    ) -> Connection:
        """Bind a validated registration to a new connection and announce it.

        :raises Refusal: the ``client_id`` is taken and duplicates are refused.
        """
        previous = self.registry.get(registration.client_id)
        if previous is not None:
            if self.settings.refuse_duplicates:
                raise Refusal(
                    f"Client ID '{registration.client_id}' is already connected",
                    CLOSE_DUPLICATE,
                )
            log.warning(
                "[WS] %s reconnected: the newer connection takes over the old one",
                registration.client_id,
            )
            self.unregister(previous)
            previous.close(CLOSE_REPLACED, "replaced by a newer connection")

        conn_holder: list[Connection] = []

        def overflow() -> None:
            conn = conn_holder[0]
            log.warning(
                "[WS] %s stopped reading (%d frames pending): disconnecting it",
                conn.client_id,
                self.settings.max_pending_sends,
            )
            conn.close(CLOSE_TOO_SLOW, "too many frames pending")

        conn = Connection(
            client_id=registration.client_id,
            kind=registration.kind,
            platform=registration.platform,
            target_id=registration.target_id,
            device_info=registration.device_info,
            outbox=Outbox(
                outbox_writer, limit=self.settings.max_pending_sends, on_overflow=overflow
            ),
            close=close,
            task_bucket=TokenBucket(self.settings.task_rate, self.settings.task_burst),
        )
        conn_holder.append(conn)
        self.registry.add(conn)
        metrics.CLIENTS.labels(conn.kind).inc()
        self.broadcast(link_pb2.GatewayMessage(client_online=link_pb2.ClientOnline(
            client=self._presence(conn)
        )))
        if conn.is_device:
            log.info("[WS] Registered device client: %s (platform %s)", conn.client_id,
                     conn.platform)
        else:
            log.info("[WS] Registered constellation client: %s (target %s)", conn.client_id,
                     conn.target_id)
        return conn

    def unregister(self, conn: Connection) -> None:
        """Forget a connection that is gone; its sessions are cancelled by the replicas.

        Safe to call more than once and for a connection that was taken over.
        """
        for task in list(conn.tasks):
            task.cancel()
        conn.outbox.close()
        if not self.registry.remove(conn):
            return
        metrics.CLIENTS.labels(conn.kind).dec()
        if conn.sessions:
            reason = "device_disconnected" if conn.is_device else "constellation_disconnected"
            log.info(
                "[WS] %s %s disconnected, cancelling %d active session(s) (%s)",
                conn.kind,
                conn.client_id,
                len(conn.sessions),
                reason,
            )
        self.broadcast(link_pb2.GatewayMessage(client_offline=link_pb2.ClientOffline(
            client_id=conn.client_id, kind=KIND_TO_PROTO[conn.kind], gateway_id=self.gateway_id
        )))
        log.info("[WS] %s disconnected", conn.client_id)

    def update_device_info(self, conn: Connection, info: dict[str, Any]) -> None:
        conn.device_info = info
        self.broadcast(link_pb2.GatewayMessage(device_info_update=link_pb2.DeviceInfoUpdate(
            device_id=conn.client_id, device_info_json=frames.dumps(info)
        )))

    # ------------------------------------------------------------------ other gateways

    async def remote_device(self, device_id: str) -> session_api_pb2.Device | None:
        """A device connected through another gateway, as the replicas know it.

        Every replica hears every gateway's presence, so the first one that answers is
        enough. ``None`` when no replica knows the device or none answers.
        """
        for link in self.healthy_links():
            assert link.api is not None
            try:
                device = await link.api.GetDevice(
                    session_api_pb2.GetDeviceRequest(device_id=device_id),
                    timeout=self.settings.lookup_timeout,
                    metadata=link.metadata,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                log.warning("device lookup on %s failed: %s", link.address, exc.details())
                continue
            # A stale record of one of our own clients (it just left) is no device.
            return None if device.gateway_id == self.gateway_id else device
        return None

    async def device_connected(self, device_id: str) -> bool:
        """Whether ``device_id`` is a device connected here or through another gateway."""
        if self.registry.is_device_connected(device_id):
            return True
        return await self.remote_device(device_id) is not None

    # ------------------------------------------------------------------ tasks

    async def submit_task(self, plan: TaskPlan, requester: Requester) -> str:
        """Start a session on a replica and wait until it is accepted.

        A WebSocket requester gets its ack frame from the link reader, before any
        command of the session can reach the same socket. A replica that turns out to be
        draining is skipped and the next one tried.

        :raises TaskError: no replica, a refusal, or no answer in time.
        """
        while True:
            try:
                return await self._submit_once(plan, requester)
            except TaskError as exc:
                if exc.code != "draining":
                    raise
                log.info("replica draining; submitting session %s elsewhere", plan.session_id)

    async def _submit_once(self, plan: TaskPlan, requester: Requester) -> str:
        route = self.routes.get(plan.session_id)
        if route is not None:
            if route.requester.client_id != requester.client_id:
                raise TaskError(f"Session '{plan.session_id}' belongs to another client")
            raise TaskError(f"Session '{plan.session_id}' is already running")
        link = self.pick_link()
        if link is None:
            if self.healthy_links():
                raise TaskError(
                    "Every reachable session service replica is draining; try again later",
                    503,
                )
            raise TaskError(NO_REPLICA, 503)
        submit_id = next(self._submit_ids)
        pending = PendingSubmit(plan, link, requester)
        self._pending[submit_id] = pending
        sent = link.send(link_pb2.GatewayMessage(task_submit=link_pb2.TaskSubmit(
            submit_id=submit_id,
            session_id=plan.session_id,
            task_name=plan.task_name,
            request=plan.request,
            requester_id=requester.client_id,
            requester_kind=requester.kind,
            device_id=plan.device_id,
            gateway_id=self.gateway_id,
        )))
        if not sent:
            del self._pending[submit_id]
            raise TaskError(NO_REPLICA, 503)
        link.active_sessions += 1  # until the replica reports its own count
        try:
            return await asyncio.wait_for(
                asyncio.shield(pending.future), self.settings.submit_timeout
            )
        except TimeoutError:
            self._pending.pop(submit_id, None)
            link.send(link_pb2.GatewayMessage(cancel_session=link_pb2.CancelSession(
                session_id=plan.session_id, reason="submit_timeout",
                requester_id=requester.client_id,
            )))
            raise TaskError(
                f"The session service did not accept the task within "
                f"{self.settings.submit_timeout:g}s",
                504,
            ) from None
        finally:
            if not pending.future.done():
                pending.future.cancel()
            self._pending.pop(submit_id, None)

    def forward_command_results(self, conn: Connection, frame: frames.ClientFrame) -> None:
        """Hand a device's results to the replica that owns the session, or drop them."""
        session_id = frame.session_id
        route = self.routes.get(session_id) if session_id else None
        if route is None:
            log.warning(
                "[WS] dropped command_results from %s for unknown session %r",
                conn.client_id,
                session_id,
            )
            metrics.DROPPED_RESULTS.labels("unknown_session").inc()
            return
        if route.device_id != conn.client_id:
            log.warning(
                "[WS] dropped command_results from %s for session %s, which runs on %s",
                conn.client_id,
                session_id,
                route.device_id,
            )
            metrics.DROPPED_RESULTS.labels("not_the_device").inc()
            return
        route.link.send(link_pb2.GatewayMessage(command_results=link_pb2.CommandResults(
            session_id=route.session_id,
            device_id=conn.client_id,
            response_id=frame.prev_response_id or "",
            action_results_json=frames.dumps(frame.action_results or []),
            status=frame.status,
        )))

    # ------------------------------------------------------------------ link inbound

    def on_link_up(self, link: ReplicaLink) -> None:
        metrics.REPLICAS_UP.set(len(self.healthy_links()))
        # Sessions already reported lost to their requesters may still run on a replica
        # that was only cut off, not dead: stop them, and keep their ends undelivered.
        if link.lost_sessions:
            log.info("asking replica %s to cancel %d session(s) reported lost",
                     link.address, len(link.lost_sessions))
            for session_id in link.lost_sessions:
                link.send(link_pb2.GatewayMessage(cancel_session=link_pb2.CancelSession(
                    session_id=session_id, reason="link_lost"
                )))
            # A replica that restarted does not know them and answers nothing.
            lost = set(link.lost_sessions)
            asyncio.get_running_loop().call_later(
                LOST_SESSION_MEMORY, link.lost_sessions.difference_update, lost
            )

    def on_link_batch(self, link: ReplicaLink, batch: link_pb2.SessionBatch) -> None:
        for message in batch.messages:
            which = message.WhichOneof("body")
            if which == "device_frame":
                body = message.device_frame
                device = self.registry.device(body.device_id)
                if device is not None:
                    device.send_text(body.frame_json.decode())
                else:
                    log.debug("command for %s dropped: not connected here", body.device_id)
            elif which == "task_ended":
                self._task_ended(link, message.task_ended)
            elif which == "session_opened":
                self._session_opened(link, message.session_opened)
            elif which == "task_accepted":
                self._task_accepted(link, message.task_accepted)
            elif which == "task_rejected":
                body = message.task_rejected
                pending = self._pending.pop(body.submit_id, None)
                link.active_sessions = max(0, link.active_sessions - 1)
                if body.code == "draining":
                    link.draining = True
                if pending is not None and not pending.future.done():
                    pending.future.set_exception(TaskError(
                        body.error, REJECTION_STATUS.get(body.code, 409), body.code
                    ))
            elif which == "welcome":
                link.replica_id = message.welcome.replica_id
                link.active_sessions = message.welcome.active_sessions
            elif which == "pong":
                link.active_sessions = message.pong.active_sessions

    def _task_accepted(self, link: ReplicaLink, body: link_pb2.TaskAccepted) -> None:
        link.active_sessions = body.active_sessions
        pending = self._pending.pop(body.submit_id, None)
        if pending is None or pending.future.done():
            # Nobody waits any more (the submit timed out): the session must not run.
            link.send(link_pb2.GatewayMessage(cancel_session=link_pb2.CancelSession(
                session_id=body.session_id, reason="submit_timeout"
            )))
            return
        plan = pending.plan
        device = self.registry.device(plan.device_id)
        route = Route(
            session_id=plan.session_id,
            task_name=plan.task_name,
            link=link,
            requester=pending.requester,
            device_id=plan.device_id,
            device=device,
        )
        self.routes[plan.session_id] = route
        requester_conn = pending.requester.conn
        if requester_conn is not None:
            requester_conn.sessions.add(plan.session_id)
            requester_conn.send(frames.heartbeat_frame(session_id=plan.session_id))
        if device is not None:
            device.sessions.add(plan.session_id)
        metrics.TASKS.labels("accepted").inc()
        pending.future.set_result(plan.session_id)

    def _session_opened(self, link: ReplicaLink, body: link_pb2.SessionOpened) -> None:
        """A session started elsewhere runs on a device of ours: route its results."""
        if body.session_id in self.routes:
            return
        device = self.registry.device(body.device_id)
        self.routes[body.session_id] = Route(
            session_id=body.session_id,
            task_name=body.task_name,
            link=link,
            requester=Requester(body.requester_id, body.requester_kind),
            device_id=body.device_id,
            device=device,
        )
        if device is not None:
            device.sessions.add(body.session_id)

    def _deliver_end(
        self,
        route: Route | None,
        *,
        requester: Requester,
        device_id: str,
        notify_requester: bool,
        notify_device: bool,
        text: str,
    ) -> None:
        sent_to: Connection | None = None
        if notify_requester and requester.kind in (
            link_pb2.REQUESTER_KIND_DEVICE,
            link_pb2.REQUESTER_KIND_CONSTELLATION,
        ):
            if route is not None:
                # Only the very connection that asked: not a successor with its id.
                conn = route.requester.conn
                if conn is not None and self.registry.get(conn.client_id) is conn:
                    sent_to = conn
            else:
                sent_to = self.registry.get(requester.client_id)
            if sent_to is not None:
                sent_to.send_text(text)
        if notify_device:
            device = route.device if route is not None else self.registry.device(device_id)
            if device is not None and device is not sent_to:
                if self.registry.get(device.client_id) is device:
                    device.send_text(text)

    def _forget_route(self, session_id: str) -> Route | None:
        route = self.routes.pop(session_id, None)
        if route is not None:
            if route.requester.conn is not None:
                route.requester.conn.sessions.discard(session_id)
            if route.device is not None:
                route.device.sessions.discard(session_id)
        return route

    def _task_ended(self, link: ReplicaLink, body: link_pb2.TaskEnded) -> None:
        link.active_sessions = body.active_sessions
        if body.session_id in link.lost_sessions:
            link.lost_sessions.discard(body.session_id)
            log.info("session %s ended after it was reported lost: not delivered again",
                     body.session_id)
            return
        route = self._forget_route(body.session_id)
        metrics.TASKS.labels("ended").inc()
        self._deliver_end(
            route,
            requester=Requester(body.requester_id, body.requester_kind),
            device_id=body.device_id,
            notify_requester=body.notify_requester,
            notify_device=body.notify_device,
            text=body.frame_json.decode(),
        )

    def on_link_lost(self, link: ReplicaLink, cause: str) -> None:
        """A replica is gone: everything it held ends now for those who wait on it."""
        metrics.REPLICAS_UP.set(len(self.healthy_links()))
        for submit_id, pending in list(self._pending.items()):
            if pending.link is link:
                del self._pending[submit_id]
                if not pending.future.done():
                    pending.future.set_exception(TaskError(
                        f"Session service replica {link.address} was lost: {cause}", 503
                    ))
        lost = [route for route in self.routes.values() if route.link is link]
        if lost:
            log.warning(
                "replica %s lost with %d running session(s): ending them", link.address,
                len(lost),
            )
        for route in lost:
            self._forget_route(route.session_id)
            link.lost_sessions.add(route.session_id)
            error = (
                f"Session service replica {link.address} became unreachable ({cause}); "
                "the session was lost"
            )
            text = frames.encode(frames.task_end_frame(
                session_id=route.session_id,
                task_name=route.task_name,
                status=frames.FAILED,
                result=None,
                error=error,
            ))
            self._deliver_end(
                route,
                requester=route.requester,
                device_id=route.device_id,
                notify_requester=True,
                notify_device=route.requester.kind != link_pb2.REQUESTER_KIND_DEVICE,
                text=text,
            )
        link.active_sessions = 0
