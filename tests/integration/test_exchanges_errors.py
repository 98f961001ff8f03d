"""After registration: a client's error report is acknowledged, and a malformed frame is
answered with an error frame while the connection stays open."""

from __future__ import annotations

import pytest

from tests.integration.exchange_support import assert_error, heartbeat_acked, no_sessions
from tests.stack import Stack, register_device


async def test_client_error_report_is_acknowledged(stack: Stack) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send({"type": "error", "status": "error", "client_type": "device",
                       "client_id": "dev1", "error": "tool server crashed"})
    ack = await device.recv()
    assert_error(ack)
    await heartbeat_acked(device, "dev1")
    assert stack.gateway.registry.get("dev1") is not None
    await device.close()


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2]",
        "null",
        '{"status": "ok", "client_id": "dev1"}',
        '{"type": "bogus", "client_id": "dev1"}',
        '{"type": "heartbeat", "client_id": 42}',
        '{"type": "task", "client_id": "dev1", "request": 17, "task_name": "t1"}',
        '{"type": "task", "client_id": "dev1", "request": "   ", "task_name": "t1"}',
        '{"type": "command_results", "client_id": "dev1", "session_id": "s",'
        ' "action_results": "not a list"}',
        '{"type": "device_info_response", "client_id": "dev1", "metadata": [1]}',
        b"\xff\xfe\xfd",
    ],
    ids=["bad-json", "array", "null", "no-type", "unknown-type", "int-client-id",
         "number-request", "blank-request", "results-not-list", "metadata-not-object",
         "not-utf8"],
)
async def test_malformed_frame_after_registration_keeps_the_connection(
    stack: Stack, raw: str | bytes
) -> None:
    device = await register_device(stack.ws_url, "dev1")
    await device.send(raw)
    assert_error(await device.recv())
    await heartbeat_acked(device, "dev1")
    await no_sessions(stack)
    await device.close()
