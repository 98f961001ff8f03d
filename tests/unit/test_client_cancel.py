"""DeviceClient stops a session's running tool calls when the session ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aip_client.device import DeviceClient
from aip_client.tools import ToolRegistry, builtin_registry
from tests.integration.cli_support import alive, spawning_shell


def _client() -> tuple[DeviceClient, list[str]]:
    events: list[str] = []
    tools = ToolRegistry()

    @tools.tool()
    async def nap(name: str) -> str:
        events.append(f"start {name}")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append(f"cancelled {name}")
            raise
        return name

    return DeviceClient("ws://127.0.0.1:1/ws", "dev", tools), events


def _command(session_id: str, name: str, status: str = "continue") -> dict[str, Any]:
    return {
        "type": "command",
        "status": status,
        "session_id": session_id,
        "response_id": f"r-{name}",
        "actions": [{"tool_name": "nap", "parameters": {"name": name}, "call_id": name}],
    }


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_task_end_cancels_only_its_session() -> None:
    client, events = _client()
    await client._handle(_command("s1", "a"))
    await client._handle(_command("s2", "b"))
    await _settle()
    assert events == ["start a", "start b"]
    await client._handle(
        {
            "type": "task_end",
            "status": "failed",
            "session_id": "s1",
            "error": "Session cancelled: requested",
        }
    )
    await _settle()
    assert events == ["start a", "start b", "cancelled a"]
    assert client.work.running_for("s2") == 1 and client.work.running_for("s1") == 0
    assert client.commands_done == 0 and client._unsent == []  # no result for a
    await client.stop()
    assert "cancelled b" in events


async def test_an_ending_command_cancels_the_session_and_runs_its_own_actions() -> None:
    client, events = _client()
    await client._handle(_command("s1", "a"))
    await _settle()
    await client._handle(
        {
            "type": "command",
            "status": "completed",
            "session_id": "s1",
            "response_id": "r-end",
            "actions": [],
        }
    )
    await _settle()
    assert events == ["start a", "cancelled a"]
    assert client.work.sessions_cancelled == 1 and not client.work.tasks
    await client._handle(_command("s1", "c", status="failed"))
    await _settle()
    assert events[-1] == "start c"  # an ending command with actions still runs them
    await client.stop()


def _pids(pid_file: Path) -> list[int]:
    return [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []


async def _wait_pids(pid_file: Path) -> list[int]:
    for _ in range(500):
        pids = await asyncio.to_thread(_pids, pid_file)
        if len(pids) == 2:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError("the shell did not start its child")


async def _wait_gone(pids: list[int]) -> None:
    for _ in range(200):
        if not any(alive(pid) for pid in pids):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still running: {pids}")


async def test_run_shell_ends_its_process_group_when_cancelled_or_timed_out(tmp_path: Path) -> None:
    shell = builtin_registry(allow_shell=True, workdir=tmp_path, shell_timeout=30)
    call = asyncio.ensure_future(shell.call("run_shell", {"cmd": spawning_shell(tmp_path / "a")}))
    pids = await _wait_pids(tmp_path / "a")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _wait_gone(pids)

    # A child that ignores SIGTERM gets SIGKILL after the grace.
    stubborn = "trap '' TERM; sleep 30 & echo $$ > b.tmp; echo $! >> b.tmp; mv b.tmp b; wait"
    timed = asyncio.ensure_future(shell.call("run_shell", {"cmd": stubborn, "timeout": 0.5}))
    pids = await _wait_pids(tmp_path / "b")
    async with asyncio.timeout(10):
        outcome = await timed
    assert outcome.status == "failure" and "timed out after 0.5s" in (outcome.error or "")
    await _wait_gone(pids)
