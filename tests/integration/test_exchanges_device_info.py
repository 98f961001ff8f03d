"""After registration: the device info exchanges, a constellation asking for its device's
system info and a device pushing fresh info."""

from __future__ import annotations

from tests.integration.exchange_support import (
    SYSTEM_INFO,
    assert_ack,
    heartbeat_acked,
    info_request,
)
from tests.stack import (
    Client,
    Stack,
    register_constellation,
    register_device,
    register_frame,
    wait_for,
)
from tests.wire import assert_wire_frame


async def test_device_info_request_returns_system_info(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(info_request("c1", "dev1", request_id="q-42"))
    response = await constellation.recv()
    assert_wire_frame(response)
    assert response["type"] == "device_info_response", response
    assert response["status"] == "ok", response
    assert response["result"] == SYSTEM_INFO
    assert response["response_id"] == "q-42"
    assert response.get("error") is None
    await device.expect_silence(0.2)
    await device.close()
    await constellation.close()


async def test_device_info_is_whole_metadata_without_system_info(stack: Stack) -> None:
    metadata = {"platform": "linux", "hostname": "box", "cpu": 4}
    device = await register_device(stack.ws_url, "dev1", metadata=metadata)
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await constellation.send(info_request("c1", None, request_id="q2"))  # defaults to dev1
    response = await constellation.recv()
    assert response["type"] == "device_info_response" and response["status"] == "ok", response
    assert response["result"] == metadata
    assert response["response_id"] == "q2"
    await device.close()
    await constellation.close()


async def test_device_info_for_a_device_that_left_is_an_error_response(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    await device.close()
    await wait_for(lambda: stack.gateway.registry.get("dev1") is None)
    await constellation.send(info_request("c1", "dev1", request_id="q3"))
    response = await constellation.recv()
    assert_wire_frame(response)
    assert response["type"] == "device_info_response", response
    assert response["status"] == "error", response
    assert isinstance(response["error"], str) and response["error"], response
    assert response["response_id"] == "q3"
    assert not response.get("result")
    await heartbeat_acked(constellation, "c1")
    await constellation.close()


async def test_device_info_for_an_unknown_device_is_an_error_response(stack: Stack) -> None:
    constellation = await Client.connect(stack.ws_url)
    await constellation.send(register_frame("c1", "constellation", target_id=None))
    assert_ack(await constellation.recv())
    await constellation.send(info_request("c1", "ghost", request_id="q4"))
    response = await constellation.recv()
    assert_wire_frame(response)
    assert response["type"] == "device_info_response", response
    assert response["status"] == "error", response
    assert "ghost" in response["error"]
    assert response["response_id"] == "q4"
    await constellation.close()


async def test_device_pushes_fresh_info(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    constellation = await register_constellation(stack.ws_url, "c1", "dev1")
    fresh = {"os": "Linux", "cpu_count": 16, "screen": "1920x1080"}
    await device.send({"type": "device_info_response", "status": "ok", "client_type": "device",
                       "client_id": "dev1", "metadata": {"platform": "linux",
                                                         "system_info": fresh}})
    await device.expect_silence(0.3)  # no answer to a push
    await constellation.send(info_request("c1", "dev1", request_id="q5"))
    response = await constellation.recv()
    assert response["type"] == "device_info_response" and response["status"] == "ok"
    assert response["result"] == fresh
    assert response["response_id"] == "q5"
    # The session service sees the new info too.
    await wait_for(lambda: stack.service.presence.device("dev1").device_info == fresh)  # type: ignore[union-attr]
    await heartbeat_acked(device, "dev1")
    await device.close()
    await constellation.close()
