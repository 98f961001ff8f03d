"""What probes and tools see of a replica: the standard health service, reflection, and
the container health check's probe."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


class Health:
    """The standard health service and reflection for ``service_names``; part of the
    public surface because backends and orchestrators probe it."""

    def __init__(self, server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
        self.service_names = service_names
        self._servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        reflection.enable_server_reflection(
            (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def serving(self, ok: bool = True) -> None:
        """Every service SERVING, or NOT_SERVING when not ``ok`` (the store cannot write);
        nothing changes once the graceful shutdown has begun."""
        status = (health_pb2.HealthCheckResponse.SERVING if ok
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.service_names):
            await self._servicer.set(name, status)

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on, whatever is set later."""
        await self._servicer.enter_graceful_shutdown()


def probe(address: str = "127.0.0.1:50051", timeout: float = 3.0) -> int:
    """A container health check's exit status: 0 when the replica at ``address`` says
    SERVING, 1 otherwise (draining, unreachable, or no answer within ``timeout``)."""
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return 1
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1
