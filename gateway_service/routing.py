"""Sessions as the gateway sees them: who asked, which replica owns them, where they run.

:class:`SessionRouter` submits tasks to a replica and waits (bounded) for the answer,
routes a device's results to the replica that owns the session, delivers ``task_end``
to whoever must hear it, and ends every session of a lost replica at once. It holds no
socket: frames go out through the connections' outboxes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aip_link import messages as m
from aip_wire import frames
from aip_wire.vocab import CancelReason, ClientType, RejectionCode, RequesterKind, Status
from gateway_service import metrics
from gateway_service.link import ReplicaLink
from gateway_service.registry import ClientRegistry, Connection
from gateway_service.rules import TaskPlan
from gateway_service.settings import GatewaySettings

log = logging.getLogger("aip.gateway.routing")

REQUESTER_OF_KIND = {
    ClientType.DEVICE: RequesterKind.DEVICE,
    ClientType.CONSTELLATION: RequesterKind.CONSTELLATION,
}


class TaskError(Exception):
    """A task that cannot be started; ``str(err)`` is told to the requester.

    ``http_status`` is what the HTTP API answers with for it.
    """

    def __init__(self, message: str, http_status: int = 409,
                 code: RejectionCode | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code


#: HTTP statuses for the replicas' rejection codes.
REJECTION_STATUS = {RejectionCode.EXISTS: 409, RejectionCode.NOT_FOUND: 404,
                    RejectionCode.INVALID: 400, RejectionCode.LIMIT: 429,
                    RejectionCode.DRAINING: 503}


#: Seconds a link remembers the sessions it reported lost, after it is back up.
LOST_SESSION_MEMORY = 60.0

NO_REPLICA = "No session service replica is reachable; try again later"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked for a session: a client's id and kind (link RequesterKind) and, for a
    WebSocket client on this gateway, its connection."""

    client_id: str
    kind: RequesterKind
    conn: Connection | None = None

    @classmethod
    def of(cls, conn: Connection) -> Requester:
        return cls(conn.client_id, REQUESTER_OF_KIND[conn.client_type], conn)


HTTP_REQUESTER = Requester("http", RequesterKind.HTTP)


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


class SessionRouter:
    """The gateway's routes and pending submissions, and what the link says of them."""

    def __init__(
        self,
        settings: GatewaySettings,
        registry: ClientRegistry,
        pick_link: Callable[[], ReplicaLink | None],
        healthy_links: Callable[[], list[ReplicaLink]],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._pick_link = pick_link
        self._healthy_links = healthy_links
        self.routes: dict[str, Route] = {}
        self.pending: dict[int, PendingSubmit] = {}
        self._submit_ids = itertools.count(1)

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
                if exc.code != RejectionCode.DRAINING:
                    raise
                log.info("replica draining; submitting session %s elsewhere", plan.session_id)

    async def _submit_once(self, plan: TaskPlan, requester: Requester) -> str:
        route = self.routes.get(plan.session_id)
        if route is not None:
            if route.requester.client_id != requester.client_id:
                raise TaskError(f"Session '{plan.session_id}' belongs to another client")
            raise TaskError(f"Session '{plan.session_id}' is already running")
        link = self._pick_link()
        if link is None:
            if self._healthy_links():
                raise TaskError(
                    "Every reachable session service replica is draining; try again later",
                    503,
                )
            raise TaskError(NO_REPLICA, 503)
        submit_id = next(self._submit_ids)
        pending = PendingSubmit(plan, link, requester)
        self.pending[submit_id] = pending
        sent = link.send(m.TaskSubmit(
            submit_id=submit_id,
            session_id=plan.session_id,
            task_name=plan.task_name,
            request=plan.request,
            requester_id=requester.client_id,
            requester_kind=requester.kind,
            device_id=plan.device_id,
            gateway_id=self.settings.gateway_id,
        ))
        if not sent:
            del self.pending[submit_id]
            raise TaskError(NO_REPLICA, 503)
        link.active_sessions += 1  # until the replica reports its own count
        try:
            return await asyncio.wait_for(
                asyncio.shield(pending.future), self.settings.submit_timeout
            )
        except TimeoutError:
            self.pending.pop(submit_id, None)
            link.send(m.CancelSession(plan.session_id, CancelReason.SUBMIT_TIMEOUT,
                                      requester.client_id))
            raise TaskError(
                f"The session service did not accept the task within "
                f"{self.settings.submit_timeout:g}s",
                504,
            ) from None
        finally:
            if not pending.future.done():
                pending.future.cancel()
            self.pending.pop(submit_id, None)

    def forward_command_results(
        self, conn: Connection, frame: frames.ClientFrame, raw: str | bytes
    ) -> None:
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
        route.link.send(m.CommandResults(
            session_id=route.session_id,
            device_id=conn.client_id,
            response_id=frame.prev_response_id or "",
            frame_json=raw.encode() if isinstance(raw, str) else raw,
        ))

    def task_accepted(self, link: ReplicaLink, body: m.TaskAccepted) -> None:
        link.active_sessions = body.active_sessions
        pending = self.pending.pop(body.submit_id, None)
        if pending is None or pending.future.done():
            # Nobody waits any more (the submit timed out): the session must not run.
            link.send(m.CancelSession(body.session_id, CancelReason.SUBMIT_TIMEOUT))
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
            requester_conn.add_session(plan.session_id)
            requester_conn.send(frames.heartbeat_frame(session_id=plan.session_id))
        if device is not None:
            device.add_session(plan.session_id)
        metrics.TASKS.labels("accepted").inc()
        pending.future.set_result(plan.session_id)

    def session_opened(self, link: ReplicaLink, body: m.SessionOpened) -> None:
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
            device.add_session(body.session_id)

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
            RequesterKind.DEVICE,
            RequesterKind.CONSTELLATION,
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
            elif route is not None:
                log.info("task_end of session %s not delivered: %s %s is gone (the result "
                         "stays in the session records)", route.session_id,
                         "device" if requester.kind == RequesterKind.DEVICE
                         else "constellation", requester.client_id)
        if notify_device:
            device = route.device if route is not None else self.registry.device(device_id)
            if device is not None and device is not sent_to:
                if self.registry.get(device.client_id) is device:
                    device.send_text(text)

    def _forget_route(self, session_id: str) -> Route | None:
        route = self.routes.pop(session_id, None)
        if route is not None:
            if route.requester.conn is not None:
                route.requester.conn.discard_session(session_id)
            if route.device is not None:
                route.device.discard_session(session_id)
        return route

    def task_ended(self, link: ReplicaLink, body: m.TaskEnded) -> None:
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

    def task_rejected(self, link: ReplicaLink, body: m.TaskRejected) -> None:
        pending = self.pending.pop(body.submit_id, None)
        link.active_sessions = max(0, link.active_sessions - 1)
        if body.code == RejectionCode.DRAINING:
            link.draining = True
        if pending is not None and not pending.future.done():
            pending.future.set_exception(TaskError(
                body.error, REJECTION_STATUS.get(body.code, 409), body.code
            ))

    def link_up(self, link: ReplicaLink) -> None:
        # Sessions already reported lost to their requesters may still run on a replica
        # that was only cut off, not dead: stop them, and keep their ends undelivered.
        if link.lost_sessions:
            log.info("asking replica %s to cancel %d session(s) reported lost",
                     link.address, len(link.lost_sessions))
            for session_id in link.lost_sessions:
                link.send(m.CancelSession(session_id, CancelReason.LINK_LOST))
            # A replica that restarted does not know them and answers nothing.
            lost = set(link.lost_sessions)
            asyncio.get_running_loop().call_later(
                LOST_SESSION_MEMORY, link.lost_sessions.difference_update, lost
            )

    def link_lost(self, link: ReplicaLink, cause: str) -> None:
        """A replica is gone: everything it held ends now for those who wait on it."""
        for submit_id, pending in list(self.pending.items()):
            if pending.link is link:
                del self.pending[submit_id]
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
                status=Status.FAILED,
                result=None,
                error=error,
            ))
            self._deliver_end(
                route,
                requester=route.requester,
                device_id=route.device_id,
                notify_requester=True,
                notify_device=route.requester.kind != RequesterKind.DEVICE,
                text=text,
            )
        link.active_sessions = 0
