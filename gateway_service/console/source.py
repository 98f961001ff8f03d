"""The console's data: the replicas' public session API, through the links' channels.

Every replica answers every call of the API (they share the store and forward watches
and cancels of another replica's session), so the console asks the least loaded healthy
replica and, when that one cannot be reached, the next: it keeps no copy of its own.
Calls go over the channel each link already holds (its TLS included) with the
``--session-token`` credential (``authorization: Bearer``) the replicas'
``--auth-token`` checks, as the gateway's own device lookups do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from aip_grpc import session_api_pb2 as pb
from aip_grpc import session_api_pb2_grpc
from gateway_service.gateway import Gateway
from gateway_service.replicas.pool import Replica

log = logging.getLogger("aip.gateway.console")

#: Who the console's sessions are recorded as having been asked by.
REQUESTER_ID = "console"
#: Errors after which the next replica is asked: the call never reached this one's API.
_TRY_NEXT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class NoReplica(Exception):
    """No replica link is up, or none of them answered."""


class Refused(Exception):
    """The API refused the call; ``code`` is the gRPC status, ``details`` its text."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _stub(replica: Replica) -> session_api_pb2_grpc.SessionApiStub | None:
    channel = replica.transport.channel
    return session_api_pb2_grpc.SessionApiStub(channel) if channel is not None else None


class SessionSource:
    """The session API calls the console makes, on whichever replica answers."""

    def __init__(self, gateway: Gateway, timeout: float = 5.0) -> None:
        self.gateway = gateway
        self.timeout = timeout

    def replicas(self) -> list[Replica]:
        """Healthy replicas, the one placement would pick first."""
        healthy = self.gateway.healthy_links()
        first = self.gateway.pool.pick()
        if first is None:
            return healthy
        return [first, *(replica for replica in healthy if replica is not first)]

    async def _call(self, method: str, request: Any) -> Any:
        last = "no session-service replica link is up"
        for replica in self.replicas():
            stub = _stub(replica)
            if stub is None:
                continue
            try:
                return await getattr(stub, method)(
                    request, timeout=self.timeout, metadata=replica.metadata
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _TRY_NEXT:
                    raise Refused(exc.code(), exc.details() or exc.code().name) from None
                last = f"{replica.address}: {exc.details()}"
                log.info("console: %s on %s failed: %s", method, replica.address, last)
        raise NoReplica(last)

    async def devices(self) -> list[pb.Device]:
        answer: pb.ListDevicesResponse = await self._call("ListDevices", pb.ListDevicesRequest())
        return list(answer.devices)

    async def sessions(
        self, *, state: int | None = None, device_id: str = "", page_size: int = 200
    ) -> list[pb.SessionInfo]:
        request = pb.ListSessionsRequest(device_id=device_id, page_size=page_size)
        if state is not None:
            request.state = state  # type: ignore[assignment]
        answer: pb.ListSessionsResponse = await self._call("ListSessions", request)
        return list(answer.sessions)

    async def session(self, session_id: str) -> pb.SessionInfo | None:
        try:
            info: pb.SessionInfo = await self._call(
                "GetSession", pb.GetSessionRequest(session_id=session_id)
            )
        except Refused as refused:
            if refused.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return info

    async def start(
        self, device_id: str, request: str, agent: str = "", model: str = ""
    ) -> pb.SessionInfo:
        info: pb.SessionInfo = await self._call(
            "StartSession",
            pb.StartSessionRequest(
                device_id=device_id,
                request=request,
                requester_id=REQUESTER_ID,
                agent=agent,
                model=model,
            ),
        )
        return info

    async def cancel(self, session_id: str) -> pb.SessionInfo:
        info: pb.SessionInfo = await self._call(
            "CancelSession", pb.CancelSessionRequest(session_id=session_id)
        )
        return info

    async def watch(self, session_id: str) -> AsyncIterator[pb.SessionUpdate]:
        """The session's updates until it ends (or the replica's stream breaks).

        :raises NoReplica: no replica to ask. :raises Refused: e.g. an unknown session.
        """
        replicas = self.replicas()
        if not replicas:
            raise NoReplica("no session-service replica link is up")
        replica = replicas[0]
        stub = _stub(replica)
        if stub is None:
            raise NoReplica(f"{replica.address}: not started")
        call = stub.WatchSession(
            pb.WatchSessionRequest(session_id=session_id), metadata=replica.metadata
        )
        try:
            async for update in call:
                yield update
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _TRY_NEXT:
                raise NoReplica(f"{replica.address}: {exc.details()}") from None
            raise Refused(exc.code(), exc.details() or exc.code().name) from None
        finally:
            call.cancel()
