"""Both services' Prometheus metrics, scraped from real processes after real traffic:
gRPC server calls by method and code, sessions by state, command round trips, the
gateway's registration, submit and forwarding latencies, refusals and link state."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aip_grpc import session_api_pb2
from tests.integration.faults_support import Recorder, until
from tests.processes import GatewayService, Replica, free_port, wait_known
from tests.stack import (
    HOST,
    cmd,
    plan,
    register_constellation,
    register_device,
    results_for,
    task_frame,
)

pb = session_api_pb2
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_of_both_services_after_a_session() -> None:
    port = free_port()
    replica = Replica(grace=0.5, extra=("--metrics-port", str(port)))
    gateway = GatewayService("g-metrics", [replica])
    replica.start()
    gateway.start()
    clients: list[Recorder] = []
    try:
        await gateway.wait_replicas(1)
        device = Recorder(await register_device(gateway.ws_url, "dm"), "dm")
        requester = Recorder(await register_constellation(gateway.ws_url, "cm", "dm"), "cm")
        clients += [device, requester]
        await wait_known([replica], "dm")
        await requester.send(task_frame("cm", plan([cmd("one")]), client_type="constellation",
                                        target_id="dm", session_id="m-1"))
        await requester.ack("m-1")
        # A second one waits for the device: the queue shows in the gauge.
        await requester.send(task_frame("cm", plan([cmd("two")]), client_type="constellation",
                                        target_id="dm", session_id="m-2"))
        await requester.ack("m-2")
        session = await scrape(f"http://{HOST}:{port}/metrics")
        assert value(session, "aip_session_sessions", state="queued") == 1
        assert value(session, "aip_session_sessions", state="running") == 1
        await device.send(results_for(await device.command("m-1"), "dm"))
        await device.send(results_for(await device.command("m-2", timeout=10), "dm"))
        for session_id in ("m-1", "m-2"):
            await until(lambda s=session_id: bool(requester.ends(s)), 10, "the ends")
        await replica.call("GetSession", pb.GetSessionRequest(session_id="m-1"))
        await requester.send(task_frame("cm", plan([cmd("x")]), client_type="constellation",
                                        target_id="nobody", session_id="m-3"))
        await until(lambda: bool(requester.of_type("error", "m-3")), 10, "a refusal")

        session = await scrape(f"http://{HOST}:{port}/metrics")
        assert value(session, "aip_session_sessions", state="queued") == 0
        assert value(session, "aip_session_ended_total", state="completed") == 2
        assert value(session, "aip_session_command_seconds_count") == 2
        assert value(session, "aip_session_grpc_server_handled_total",
                     grpc_service="aip.v1.SessionApi", grpc_method="GetSession",
                     grpc_code="OK") == 1
        assert value(session, "aip_session_grpc_server_handling_seconds_count",
                     grpc_service="aip.v1.SessionApi", grpc_method="GetSession") == 1
        assert value(session, "aip_session_grpc_server_started_total",
                     grpc_service="aip.v1.GatewayLink", grpc_method="Connect") >= 1
        assert value(session, "aip_session_store_write_errors_total") == 0

        http = await scrape(f"http://{HOST}:{gateway.port}/metrics")
        assert value(http, "aip_gateway_registration_seconds_count", outcome="accepted") == 2
        assert value(http, "aip_gateway_task_submit_seconds_count") == 2
        assert value(http, "aip_gateway_command_forward_seconds_count",
                     direction="to_replica") == 2
        assert value(http, "aip_gateway_command_forward_seconds_count",
                     direction="to_device") >= 2
        assert value(http, "aip_gateway_tasks_refused_total", reason="not_found") == 1
        assert value(http, "aip_gateway_replica_link_up", replica=replica.address) == 1

        replica.kill()
        await asyncio.sleep(0.1)
        for _ in range(100):
            http = await scrape(f"http://{HOST}:{gateway.port}/metrics")
            if value(http, "aip_gateway_replica_link_up", replica=replica.address) == 0:
                break
            await asyncio.sleep(0.1)
        assert value(http, "aip_gateway_replica_link_up", replica=replica.address) == 0
    finally:
        for client in clients:
            await client.close()
        gateway.stop()
        replica.stop()

