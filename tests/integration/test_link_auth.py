"""The gateway link is closed to strangers: only the link token opens it, the API token
does not (nor does the link token open the API), and a replica reachable beyond loopback
does not start without a link credential unless told ``--insecure-link``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from aip_grpc import link_pb2, link_pb2_grpc, session_api_pb2, session_api_pb2_grpc
from aip_link.channel import CHANNEL_OPTIONS
from tests.conftest import StackFactory
from tests.processes import free_port
from tests.stack import (
    HOST,
    GatewayProcess,
    SessionReplica,
    answer_commands,
    api_call,
    cmd,
    plan,
    register_device,
    task_frame,
    wait_for,
)

LINK = "link-s3cret"
API = "api-s3cret"


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _announce(address: str, metadata: tuple[tuple[str, str], ...]) -> None:
    """Open the link as gateway "gw-fake" announcing device "fake-dev"; waits for the
    replica's welcome, raises the call's error."""
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = link_pb2_grpc.GatewayLinkStub(channel).Connect(metadata=metadata)
        fake = link_pb2.ClientPresence(client_id="fake-dev", kind=link_pb2.CLIENT_KIND_DEVICE,
                                       platform="linux", device_info_json=b"{}",
                                       gateway_id="gw-fake")
        await call.write(link_pb2.GatewayBatch(messages=[link_pb2.GatewayMessage(
            hello=link_pb2.Hello(gateway_id="gw-fake", clients=[fake]))]))
        async with asyncio.timeout(5):
            answer = await call.read()
        assert answer is not grpc.aio.EOF
        assert answer.messages[0].WhichOneof("body") == "welcome"
        call.cancel()


@pytest.mark.parametrize("metadata", [(), _bearer("wrong"), _bearer(API)],
                         ids=["no-token", "wrong-token", "api-token"])
async def test_the_link_refuses_callers_without_the_link_token(
    metadata: tuple[tuple[str, str], ...],
) -> None:
    replica = SessionReplica(link_token=LINK, auth_token=API)
    await replica.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _announce(replica.address, metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await asyncio.sleep(0.2)
        assert not replica.service.hub.peers
        assert replica.service.presence.device("fake-dev") is None
        devices = await api_call(replica.address, "ListDevices",
                                 session_api_pb2.ListDevicesRequest(), metadata=_bearer(API))
        assert not devices.devices
        # The right token opens it (and the fake device is then announced, as it must).
        await _announce(replica.address, _bearer(LINK))
    finally:
        await replica.stop()


async def test_the_link_token_does_not_open_the_api() -> None:
    replica = SessionReplica(link_token=LINK, auth_token=API)
    await replica.start()
    try:
        async with grpc.aio.insecure_channel(replica.address) as channel:
            api = session_api_pb2_grpc.SessionApiStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await api.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=5,
                                      metadata=_bearer(LINK))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await api.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=5,
                                  metadata=_bearer(API))
    finally:
        await replica.stop()


def test_the_same_value_for_both_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="must differ"):
        SessionReplica(link_token="same", auth_token="same")


async def test_gateways_with_the_link_token_run_sessions(
    make_stack: StackFactory, tmp_path: Path,
) -> None:
    token_file = tmp_path / "link-token"
    token_file.write_text(LINK + "\n")
    stack = await make_stack(session={"link_token_file": token_file, "auth_token": API},
                             gateway={"link_token": LINK, "session_token": API})
    device = await register_device(stack.ws_url, "dev1")
    await device.send(task_frame("dev1", plan([cmd()]), session_id="s-linked"))
    assert (await device.recv())["session_id"] == "s-linked"
    await answer_commands(device, "dev1", 1)
    assert (await device.recv_type("task_end"))["status"] == "completed"
    await device.close()


async def test_a_gateway_with_only_the_api_token_cannot_link() -> None:
    replica = SessionReplica(link_token=LINK, auth_token=API)
    await replica.start()
    gateway = GatewayProcess([replica.address], session_token=API)
    await gateway.start()
    try:
        link = gateway.gateway.links[0]
        await wait_for(lambda: "UNAUTHENTICATED" in link.last_error, timeout=10)
        assert not link.healthy and not replica.service.hub.peers
    finally:
        await gateway.stop()
        await replica.stop()


def _replica(*args: str) -> list[str]:
    return [sys.executable, "-m", "session_service", "--store-path", "", "--log-level",
            "warning", *args]


def test_a_replica_beyond_loopback_needs_a_link_credential() -> None:
    done = subprocess.run(_replica("--host", "0.0.0.0", "--port", str(free_port())),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert "--link-token" in message and "--insecure-link" in message, done.stderr


async def test_insecure_link_opts_out_loudly() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *_replica("--host", "0.0.0.0", "--port", str(port), "--insecure-link"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stderr is not None
        async with asyncio.timeout(30):
            line = await process.stderr.readline()
        assert b"INSECURE" in line and b"--insecure-link" in line, line
        answer = None
        for _ in range(100):
            try:
                answer = await api_call(f"{HOST}:{port}", "ListDevices",
                                        session_api_pb2.ListDevicesRequest())
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        assert answer is not None and not answer.devices
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            await process.wait()
