"""The session table: every session the gateway routes, and the submits it waits on.

:class:`SessionTable` knows who asked for each session, which replica owns it and which
device connection runs it. It submits tasks and waits (bounded) for the replica's answer,
routes a device's results to the owning replica, delivers ``task_end`` to whoever must
hear it, and ends every session of a lost replica at once. It reaches the replicas only
through the small :class:`Replicas` port and refuses only with
:class:`~gateway_service.rules.Refusal` and a :class:`~aip_wire.vocab.RejectionCode`: the
adapters choose what a refusal looks like on their protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from aip_link import messages as m
from aip_runtime import tracing
from aip_wire import frames
from aip_wire.vocab import (
    CancelReason,
    ClientType,
    RejectionCode,
    RequesterKind,
    Status,
    end_audience,
)
from gateway_service import metrics
from gateway_service.registry import ClientRegistry, Connection
from gateway_service.replicas.pool import Replica
from gateway_service.rules import Refusal, TaskPlan

log = logging.getLogger("aip.gateway.sessions")

REQUESTER_OF_CLIENT_TYPE = {
    ClientType.DEVICE: RequesterKind.DEVICE,
    ClientType.CONSTELLATION: RequesterKind.CONSTELLATION,
}

NO_REPLICA = "No session service replica is reachable; try again later"


class Replicas(Protocol):
    """What the table needs of the replica side: placement and a way to send."""

    def pick(self, skip: Collection[Replica] = ()) -> Replica | None: ...
    def healthy(self) -> list[Replica]: ...
    def send(self, replica: Replica, message: m.GatewayMessage) -> bool: ...


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked for a session: a client's id and :class:`RequesterKind` and, for a
    WebSocket client on this gateway, its connection."""

    client_id: str
    kind: RequesterKind
    conn: Connection | None = None

    @classmethod
    def of(cls, conn: Connection) -> Requester:
        return cls(conn.client_id, REQUESTER_OF_CLIENT_TYPE[conn.client_type], conn)


HTTP_REQUESTER = Requester("http", RequesterKind.HTTP)


@dataclass(eq=False, slots=True)
class Route:
    """A running session as the gateway sees it."""

    session_id: str
    task_name: str
    replica: Replica
    requester: Requester
    device_id: str
    device: Connection | None


@dataclass(eq=False, slots=True)
class PendingSubmit:
    plan: TaskPlan
    replica: Replica
    requester: Requester
    future: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SessionTable:
    """The gateway's routes and pending submits, and what the link says of them."""

    def __init__(self, gateway_id: str, submit_timeout: float, registry: ClientRegistry,
                 replicas: Replicas) -> None:
        self.gateway_id = gateway_id
        self.submit_timeout = submit_timeout
        self.registry = registry
        self._replicas = replicas
        self.routes: dict[str, Route] = {}
        self.pending: dict[int, PendingSubmit] = {}
        self._submit_ids = itertools.count(1)

    # ------------------------------------------------------------------ submitting

    async def submit(self, plan: TaskPlan, requester: Requester) -> str:
        """Start a session on a replica and wait until it is accepted.

        A WebSocket requester gets its ack frame from the link reader, before any
        command of the session can reach the same socket. A replica that turns out to be
        draining, or unable to record the session (its store fails), is skipped and the
        next one tried.

        :raises Refusal: no replica, a rejection, or no answer in time.
        """
        if not tracing.enabled():
            return await self._submit(plan, requester)
        with tracing.tracer().start_as_current_span("aip.task.submit", attributes={
                "aip.session_id": plan.session_id, "aip.device_id": plan.device_id,
                "aip.requester_id": requester.client_id, "aip.gateway_id": self.gateway_id,
        }):
            return await self._submit(plan, requester)

    async def _submit(self, plan: TaskPlan, requester: Requester) -> str:
        # Replicas that refused this task as unable to record it now, with their words.
        unavailable: dict[Replica, Refusal] = {}
        while True:
            session_id = await self._submit_once(plan, requester, unavailable)
            if session_id is not None:
                return session_id
            log.info("replica %s refused session %s for now; trying another",
                     "unavailable" if unavailable else "draining", plan.session_id)

    async def _submit_once(self, plan: TaskPlan, requester: Requester,
                           unavailable: dict[Replica, Refusal]) -> str | None:
        """The accepted session's id, or ``None`` when the replica said it drains or
        cannot record sessions now (then it is added to ``unavailable``)."""
        route = self.routes.get(plan.session_id)
        if route is not None:
            if route.requester.client_id != requester.client_id:
                raise Refusal(RejectionCode.EXISTS,
                              f"Session '{plan.session_id}' belongs to another client")
            raise Refusal(RejectionCode.EXISTS, f"Session '{plan.session_id}' is already running")
        replica = self._replicas.pick(unavailable)
        if replica is None:
            if unavailable:  # the last one's own words
                raise list(unavailable.values())[-1]
            if self._replicas.healthy():
                raise Refusal(
                    RejectionCode.DRAINING,
                    "Every reachable session service replica is draining; try again later",
                )
            raise Refusal(RejectionCode.UNAVAILABLE, NO_REPLICA)
        submit_id = next(self._submit_ids)
        pending = PendingSubmit(plan, replica, requester)
        self.pending[submit_id] = pending
        sent = self._replicas.send(replica, m.TaskSubmit(
            submit_id=submit_id,
            session_id=plan.session_id,
            task_name=plan.task_name,
            request=plan.request,
            requester_id=requester.client_id,
            requester_kind=requester.kind,
            device_id=plan.device_id,
            gateway_id=self.gateway_id,
            agent=plan.agent,
            model=plan.model,
            traceparent=tracing.traceparent() if tracing.enabled() else "",
        ))
        if not sent:
            del self.pending[submit_id]
            raise Refusal(RejectionCode.UNAVAILABLE, NO_REPLICA)
        replica.active_sessions += 1  # until the replica reports its own count
        try:
            async with asyncio.timeout(self.submit_timeout):
                return await asyncio.shield(pending.future)
        except TimeoutError:
            self.pending.pop(submit_id, None)
            # Only the session this submit created, if the replica created one: the
            # id may belong to another client's session.
            self._replicas.send(replica, m.CancelSession(
                plan.session_id, CancelReason.SUBMIT_TIMEOUT, requester.client_id,
                submit_id=submit_id))
            raise Refusal(
                RejectionCode.TIMEOUT,
                f"The session service did not accept the task within "
                f"{self.submit_timeout:g}s",
            ) from None
        except _Rejected as rejected:
            if rejected.refusal.code == RejectionCode.DRAINING:
                return None
            if rejected.answered and rejected.refusal.code == RejectionCode.UNAVAILABLE:
                unavailable[replica] = rejected.refusal
                return None
            raise rejected.refusal from None
        finally:
            if not pending.future.done():
                pending.future.cancel()
            self.pending.pop(submit_id, None)

    def task_accepted(self, replica: Replica, body: m.TaskAccepted) -> None:
        replica.active_sessions = body.active_sessions
        pending = self.pending.pop(body.submit_id, None)
        if pending is None or pending.future.done():
            # Nobody waits any more (the submit timed out): the session must not run.
            self._replicas.send(replica, m.CancelSession(
                body.session_id, CancelReason.SUBMIT_TIMEOUT, submit_id=body.submit_id))
            return
        plan = pending.plan
        device = self.registry.device(plan.device_id)
        self.routes[plan.session_id] = Route(
            session_id=plan.session_id,
            task_name=plan.task_name,
            replica=replica,
            requester=pending.requester,
            device_id=plan.device_id,
            device=device,
        )
        requester_conn = pending.requester.conn
        if requester_conn is not None:
            requester_conn.add_session(plan.session_id)
            requester_conn.send(frames.heartbeat_frame(session_id=plan.session_id))
        if device is not None:
            device.add_session(plan.session_id)
        metrics.TASKS.labels("accepted").inc()
        pending.future.set_result(plan.session_id)

    def task_rejected(self, replica: Replica, body: m.TaskRejected) -> None:
        pending = self.pending.pop(body.submit_id, None)
        replica.active_sessions = max(0, replica.active_sessions - 1)
        if body.code == RejectionCode.DRAINING:
            replica.draining = True
        if pending is not None and not pending.future.done():
            # The replica's own code, straight through.
            pending.future.set_exception(_Rejected(Refusal(body.code, body.error),
                                                   answered=True))

    # ------------------------------------------------------------------ running

    def session_opened(self, replica: Replica, body: m.SessionOpened) -> None:
        """A session started elsewhere runs on a device of ours: route its results."""
        if body.session_id in self.routes:
            return
        device = self.registry.device(body.device_id)
        self.routes[body.session_id] = Route(
            session_id=body.session_id,
            task_name=body.task_name,
            replica=replica,
            requester=Requester(body.requester_id, body.requester_kind),
            device_id=body.device_id,
            device=device,
        )
        if device is not None:
            device.add_session(body.session_id)

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
        self._replicas.send(route.replica, m.CommandResults(
            session_id=route.session_id,
            device_id=conn.client_id,
            response_id=frame.prev_response_id or "",
            frame_json=raw.encode() if isinstance(raw, str) else raw,
        ))

    # ------------------------------------------------------------------ ending

    def task_ended(self, replica: Replica, body: m.TaskEnded) -> None:
        replica.active_sessions = body.active_sessions
        if body.session_id in replica.lost_sessions:
            replica.lost_sessions.discard(body.session_id)
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

    def replica_lost(self, replica: Replica, cause: str) -> None:
        """A replica is gone: everything it held ends now for those who wait on it."""
        for submit_id, pending in list(self.pending.items()):
            if pending.replica is replica:
                del self.pending[submit_id]
                if not pending.future.done():
                    pending.future.set_exception(_Rejected(Refusal(
                        RejectionCode.UNAVAILABLE,
                        f"Session service replica {replica.address} was lost: {cause}",
                    )))
        lost = [route for route in self.routes.values() if route.replica is replica]
        if lost:
            log.warning("replica %s lost with %d running session(s): ending them",
                        replica.address, len(lost))
        for route in lost:
            self._forget_route(route.session_id)
            replica.lost_sessions.add(route.session_id)
            error = (
                f"Session service replica {replica.address} became unreachable ({cause}); "
                "the session was lost"
            )
            text = frames.encode(frames.task_end_frame(
                session_id=route.session_id,
                task_name=route.task_name,
                status=Status.FAILED,
                result=None,
                error=error,
            ))
            # Lost with the link: nobody cancelled it, so no cancel reason.
            notify_requester, notify_device = end_audience(route.requester.kind, None)
            self._deliver_end(
                route,
                requester=route.requester,
                device_id=route.device_id,
                notify_requester=notify_requester,
                notify_device=notify_device,
                text=text,
            )

    def _forget_route(self, session_id: str) -> Route | None:
        route = self.routes.pop(session_id, None)
        if route is not None:
            if route.requester.conn is not None:
                route.requester.conn.discard_session(session_id)
            if route.device is not None:
                route.device.discard_session(session_id)
        return route

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


class _Rejected(Exception):
    """Carries a refusal through the submit's future, so that the submit can tell it
    from refusals of its own. Only what a replica answered itself may be retried
    elsewhere ("draining", "unavailable"): a submit lost with its link may be running."""

    def __init__(self, refusal: Refusal, answered: bool = False) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal
        self.answered = answered
