"""A session's end stops its work on a real ``aip-device``: the shell command and the
processes it started are gone, whoever ended the session."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from aip_grpc import session_api_pb2 as pb
from tests.integration.cli_support import (
    BIN,
    ENV,
    aip_device,
    aip_task,
    alive,
    pids_in,
    read_pids,
    spawning_shell,
    stop,
)
from tests.stack import Stack, api_call, get_session, wait_for

pytestmark = pytest.mark.timeout(90)


def shell_plan(pid_file: Path) -> str:
    return json.dumps(
        [{"tool_name": "run_shell", "parameters": {"cmd": spawning_shell(pid_file), "timeout": 60}}]
    )


async def all_gone(pids: list[int]) -> None:
    await wait_for(lambda: not any(alive(pid) for pid in pids), 2.0, what=f"processes {pids} ended")


async def test_cancel_session_kills_the_command_and_its_children(
    stack: Stack, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    async with aip_device(stack, "cancel-dev", "--allow-shell"):
        await wait_for(lambda: stack.service.presence.device("cancel-dev") is not None)
        info = await api_call(
            stack.replica.address,
            "StartSession",
            pb.StartSessionRequest(
                device_id="cancel-dev", request=shell_plan(pid_file), session_id="cx-1"
            ),
        )
        assert info.state == pb.SESSION_STATE_RUNNING
        pids = await pids_in(pid_file)
        await api_call(
            stack.replica.address, "CancelSession", pb.CancelSessionRequest(session_id="cx-1")
        )
        await all_gone(pids)
        info = await get_session(stack.replica.address, "cx-1")
        assert info.state == pb.SESSION_STATE_CANCELLED
        assert info.steps_done == 0  # the killed command's result was not sent


async def test_ctrl_c_of_aip_task_cancels_its_session(stack: Stack, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    async with aip_device(stack, "sigint-dev", "--allow-shell"):
        task = await asyncio.create_subprocess_exec(
            str(BIN / "aip-task"),
            "--url",
            stack.ws_url,
            "--session-service",
            stack.replica.address,
            "--device",
            "sigint-dev",
            shell_plan(pid_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        try:
            pids = await pids_in(pid_file)
            [session_id] = [sid for sid, s in stack.service.manager.sessions.items() if s.running]
            task.send_signal(signal.SIGINT)
            async with asyncio.timeout(10):
                _, err = await task.communicate()
        finally:
            await stop(task)
        assert task.returncode == 130, err.decode()
        assert f"interrupted; session {session_id} is cancelled" in err.decode()
        await all_gone(pids)
        info = await get_session(stack.replica.address, session_id)
        assert info.state == pb.SESSION_STATE_CANCELLED
        assert info.cancel_reason == "interrupted"


async def test_constellation_leaving_stops_the_work(stack: Stack, tmp_path: Path) -> None:
    """No cancel call at all: aip-task killed outright, so its socket just drops."""
    pid_file = tmp_path / "pids"
    async with aip_device(stack, "gone-dev", "--allow-shell"):
        task = await asyncio.create_subprocess_exec(
            str(BIN / "aip-task"),
            "--url",
            stack.ws_url,
            "--session-service",
            "",
            "--device",
            "gone-dev",
            shell_plan(pid_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=ENV,
        )
        try:
            pids = await pids_in(pid_file)
            task.kill()
            await task.wait()
        finally:
            await stop(task)
        await all_gone(pids)


async def test_aip_task_timeout_cancels_its_session(stack: Stack, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    async with aip_device(stack, "late-dev", "--allow-shell"):
        code, _, err = await aip_task(
            stack, "--device", "late-dev", "--timeout", "1.5", shell_plan(pid_file)
        )
        assert code == 4, err
        assert "is cancelled" in err, err
        pids = await asyncio.to_thread(read_pids, pid_file)
        assert len(pids) == 2, pids  # the command had started
        await all_gone(pids)
    [info] = [s for s in stack.service.manager.sessions.values()]
    assert info.cancel_reason == "client_timeout"
