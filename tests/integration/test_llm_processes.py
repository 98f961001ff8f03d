"""The llm agent in real processes: two replicas sharing one store file, a gateway, and
the scripted model server of the test. Any replica's GetSession has the transcript, and
the key (given in the environment) is in no log line at debug level."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from aip_grpc import session_api_pb2 as pb
from tests.integration.llm_support import (
    FAKE_KEY,
    PNG,
    ScriptedModel,
    ToolDevice,
    answer,
    tool_call,
)
from tests.processes import GatewayService, Replica, wait_known
from tests.stack import register_constellation, register_device, task_frame

pytestmark = pytest.mark.timeout(90)


async def ended(replica: Replica, session_id: str, timeout: float = 10.0) -> pb.SessionInfo:
    """The session as ``replica`` answers once it shows it ended (the store's copy
    follows the end by a commit)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info: pb.SessionInfo = await replica.call(
            "GetSession", pb.GetSessionRequest(session_id=session_id)
        )
        if info.state != pb.SESSION_STATE_RUNNING:
            return info
        assert asyncio.get_running_loop().time() < deadline, f"{session_id} still runs"
        await asyncio.sleep(0.05)


async def test_any_replica_returns_the_transcript_and_no_log_has_the_key(
    tmp_path: Path,
) -> None:
    script = [tool_call("screen_capture", {}), answer("Nothing to do.")]
    async with ScriptedModel(script) as model:
        store = str(tmp_path / "shared.sqlite3")
        replicas = [
            Replica(
                store_path=store,
                capture=True,
                extra=(
                    "--replica-id",
                    f"r{n}",
                    "--log-level",
                    "debug",
                    "--llm-base-url",
                    model.base_url,
                    "--llm-model",
                    "scripted-model",
                ),
            )
            for n in range(2)
        ]
        for replica in replicas:
            replica.env = {"AIP_SESSION_LLM_API_KEY": FAKE_KEY}
        gateway = GatewayService("g1", replicas)
        services = [*replicas, gateway]
        for service in services:
            service.start()
        serving: asyncio.Task[None] | None = None
        try:
            await gateway.wait_replicas(2)
            device = ToolDevice(
                await register_device(gateway.ws_url, "dev1"),
                "dev1",
                {"screen.capture": {"image": PNG}},
            )
            serving = asyncio.get_running_loop().create_task(device.serve())
            await wait_known(replicas, "dev1")
            constellation = await register_constellation(gateway.ws_url, "c1", "dev1")
            await constellation.send(
                task_frame(
                    "c1",
                    "Look at the screen",
                    client_type="constellation",
                    target_id="dev1",
                    session_id="c1@t-proc",
                )
            )
            end = await constellation.recv_type("task_end", timeout=30)
            await constellation.close()
            assert end["status"] == "completed", end
            assert end["result"] == {"answer": "Nothing to do.", "steps": 1}
            infos = [await ended(replica, "c1@t-proc") for replica in replicas]
            await device.client.close()
        finally:
            if serving is not None:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await serving
            for service in services:
                service.stop()
    assert model.authorizations == [f"Bearer {FAKE_KEY}"] * 2
    for info in infos:
        assert [turn.seq for turn in info.turns] == [0, 1]
        assert json.loads(info.turns[0].tool_calls_json)[0]["name"] == "screen_capture"
        assert info.turns[1].text == "Nothing to do."
        assert FAKE_KEY not in str(info)
    assert any(info.stored for info in infos)  # one of them read it from the store
    logs = "\n".join(line for replica in replicas for line in replica.log)
    assert "model turn" in logs  # debug logs were captured
    assert FAKE_KEY not in logs
