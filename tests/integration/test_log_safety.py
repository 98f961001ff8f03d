"""A real gateway process writes no token and no forged line, and quotes little."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from gateway_service.auth import hash_token
from tests.processes import GatewayService, Replica
from tests.stack import (
    Client,
    answer_commands,
    cmd,
    plan,
    register_device,
    register_frame,
    task_frame,
    wait_for,
)

SECRET = "SECRET-8e1f0c6b2a9d4f37"
FORGED = "2026-01-01 00:00:00,000 CRITICAL aip.gateway: FORGED LINE"


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_no_secret_nor_forged_line_in_the_gateway_log(tmp_path: Path, level: str) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"dev1 device {hash_token(SECRET)}\n")
    replica = Replica()
    gateway = GatewayService(
        "gw-logs", [replica], extra_args=["--tokens-file", str(tokens_file), "--log-level", level]
    )
    gateway.capture = True
    replica.start()
    gateway.start()
    try:
        await gateway.wait_replicas(1)
        device = await register_device(f"{gateway.ws_url}?token={SECRET}", "dev1")
        await device.send(task_frame("dev1", plan([cmd("a")]), session_id="dev1@t-1"))
        await answer_commands(device, "dev1", 1)
        end = await device.recv_type("task_end", 10)
        assert end["status"] == "completed", end

        # Client text with a line break and a fake log line: reported, never a line.
        await device.send({"type": "error", "client_id": "dev1", "error": f"boom\n{FORGED}"})
        echoed = await device.recv_type("error")
        assert "\n" not in echoed["error"]
        # Ten megabytes of error text get a short error frame.
        await device.send({"type": "error", "client_id": "dev1", "error": "x" * 10_000_000})
        short = await device.recv_type("error", 20)
        assert len(short["error"]) < 400 and "more chars]" in short["error"]

        # A client_id carrying a forged line, refused (no token for it): still one line.
        intruder = await Client.connect(f"{gateway.ws_url}?token={SECRET}")
        await intruder.send(register_frame(f"evil\n{FORGED}"))
        refusal = await intruder.recv()
        assert refusal["type"] == "error" and "\n" not in refusal["error"]
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await intruder.ws.recv()
        await device.close()
        await wait_for(lambda: any("dev1 disconnected" in line for line in gateway.log), 10)
    finally:
        gateway.stop()
        replica.stop()
    log = gateway.log
    if level == "debug":  # uvicorn logs each upgrade's path, query included
        assert any("/ws?token=[redacted]" in line for line in log)
    assert not [line for line in log if SECRET in line]
    assert not [line for line in log if line.startswith(FORGED)]
    assert any("FORGED LINE" in line for line in log)  # it was logged, escaped
    assert max(len(line) for line in log) < 5000
