"""TLS, mutual TLS and the tokens between gateways, backends and replicas (the link
token's own tests are in test_link_auth.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aip_grpc import session_api_pb2, session_api_pb2_grpc
from tests.conftest import StackFactory
from tests.stack import (
    HOST,
    GatewayProcess,
    SessionReplica,
    answer_commands,
    cmd,
    plan,
    register_device,
    task_frame,
    wait_for,
)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, server certificates for 127.0.0.1 and for the name "replica", and a client
    certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=test-ca", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1"),
                            ("named", "subjectAltName=DNS:replica"),
                            ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(extension + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return d


async def _run_a_task(url: str) -> None:
    device = await register_device(url, "dev1")
    await device.send(task_frame("dev1", plan([cmd()]), session_id="s-secure"))
    assert (await device.recv())["session_id"] == "s-secure"
    await answer_commands(device, "dev1", 1)
    assert (await device.recv_type("task_end"))["status"] == "completed"
    await device.close()


async def test_token_is_required_except_for_health(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"auth_token": "s3cret", "link_token": "l1nk"},
                             gateway={"session_token": "s3cret", "link_token": "l1nk"})
    await _run_a_task(stack.ws_url)
    async with grpc.aio.insecure_channel(stack.replica.address) as channel:
        api = session_api_pb2_grpc.SessionApiStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await api.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=5,
                                  metadata=(("authorization", "Bearer nope"),))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await api.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=5,
                              metadata=(("authorization", "Bearer s3cret"),))
        probe = health_pb2_grpc.HealthStub(channel)
        status = await probe.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_gateway_without_the_token_cannot_link() -> None:
    replica = SessionReplica(link_token="s3cret")
    await replica.start()
    gateway = GatewayProcess([replica.address])
    await gateway.start()
    try:
        link = gateway.gateway.links[0]
        await wait_for(lambda: "UNAUTHENTICATED" in link.last_error, timeout=10)
        assert not link.healthy
    finally:
        await gateway.stop()
        await replica.stop()


async def test_tls_and_mutual_tls(pki: Path) -> None:
    replica = SessionReplica(tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                             tls_client_ca=pki / "ca.pem")
    await replica.start()
    good = GatewayProcess([replica.address], session_tls_ca=pki / "ca.pem",
                          session_tls_cert=pki / "client.pem",
                          session_tls_key=pki / "client.key")
    no_cert = GatewayProcess([replica.address], session_tls_ca=pki / "ca.pem")
    plain = GatewayProcess([replica.address])
    for gateway in (good, no_cert, plain):
        await gateway.start()
    try:
        await good.wait_linked(1)
        await _run_a_task(good.ws_url)
        await wait_for(lambda: bool(no_cert.gateway.links[0].last_error), timeout=10)
        await wait_for(lambda: bool(plain.gateway.links[0].last_error), timeout=10)
        assert not no_cert.gateway.links[0].healthy and not plain.gateway.links[0].healthy
    finally:
        for gateway in (good, no_cert, plain):
            await gateway.stop()
        await replica.stop()


async def test_server_name_override_for_replicas_reached_by_address(pki: Path) -> None:
    replica = SessionReplica(tls_cert=pki / "named.pem", tls_key=pki / "named.key")
    await replica.start()
    # Reached by an address the certificate does not carry...
    address = replica.address
    wrong = GatewayProcess([address], session_tls_ca=pki / "ca.pem")
    # ...unless the gateway is told which name to expect.
    right = GatewayProcess([address], session_tls_ca=pki / "ca.pem",
                           session_tls_server_name="replica")
    for gateway in (wrong, right):
        await gateway.start()
    try:
        await right.wait_linked(1)
        await wait_for(lambda: bool(wrong.gateway.links[0].last_error), timeout=10)
        assert not wrong.gateway.links[0].healthy
        assert HOST in right.gateway.links[0].address
    finally:
        for gateway in (wrong, right):
            await gateway.stop()
        await replica.stop()


async def test_aip_task_sends_the_session_token(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"auth_token": "s3cret"},
                             gateway={"session_token": "s3cret"})
    device = await register_device(stack.ws_url, "dev-listed")
    command = [str(Path(sys.executable).parent / "aip-task"), "--url", stack.ws_url,
               "--session-service", stack.replica.address, "--list-devices", "--json"]

    async def listed(*extra: str) -> list[dict[str, object]]:
        process = await asyncio.create_subprocess_exec(
            *command, *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(30):
            out, err = await process.communicate()
        assert process.returncode == 0, err
        devices: list[dict[str, object]] = json.loads(out)
        return devices

    # With the token the gRPC API answers (it knows the gateway); without it, aip-task
    # falls back to the gateway's HTTP API, which does not.
    assert [d["gateway_id"] for d in await listed("--session-token", "s3cret")] == [
        stack.gateway.gateway_id
    ]
    assert [d["gateway_id"] for d in await listed()] == [None]
    await device.close()
