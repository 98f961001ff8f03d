"""``aip-device`` and ``aip-task`` run as real processes against the in-process stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from tests.integration.cli_support import BIN, ENV, aip_device, aip_task
from tests.stack import Stack

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def test_a_plan_runs_end_to_end(stack: Stack, tmp_path: Path) -> None:
    real_tmp = await asyncio.to_thread(os.path.realpath, tmp_path)
    async with aip_device(stack, "cli-laptop", "--workdir", str(tmp_path)) as device:
        code, out, err = await aip_task(stack, "--device", "cli-laptop",
                                        str(EXAMPLES / "system-facts.json"))
        assert code == 0, (out, err)
        assert "status: completed" in out
        assert '"hostname"' in out and '"cpu_count"' in out  # system info
        # Progress on stderr, plain lines (not a TTY): every step sent and answered.
        assert "accepted on cli-laptop" in err
        for number in (1, 2):
            assert f"step {number}/2 sent" in err
            assert f"step {number}/2 answered" in err
        assert "task completed" in err
        assert "\x1b[" not in err

        code, out, err = await aip_task(stack, "--device", "cli-laptop", "--json",
                                        str(EXAMPLES / "write-read-file.json"))
        assert code == 0, (out, err)
        outcome = json.loads(out)
        assert outcome["status"] == "completed"
        read_back = outcome["result"][2][0]["result"]
        assert read_back["content"] == "Hello from an AIP plan!\nA second line, appended.\n"
        # Relative paths land in the device's working directory.
        assert read_back["path"] == os.path.join(real_tmp, "aip-demo", "hello.txt")

        device.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await device.wait() == 0


async def test_failure_exits_non_zero(stack: Stack) -> None:
    async with aip_device(stack, "cli-fail"):
        inline = json.dumps([{"tool_name": "read_file",
                              "parameters": {"path": "no/such/file"}}])
        code, out, err = await aip_task(stack, "--device", "cli-fail", inline)
        assert code == 1, (out, err)
        assert "status: failed" in out and "FileNotFoundError" in out

        # run_shell is off unless --allow-shell.
        code, out, _ = await aip_task(stack, "--device", "cli-fail",
                                      str(EXAMPLES / "shell-commands.json"), "--json")
        outcome = json.loads(out)
        # The example continues on failure: completed, but every step failed, and said so.
        assert code == 5
        assert outcome["status"] == "completed"
        assert (outcome["failed_steps"], outcome["steps"]) == (3, 3)
        assert all(step[0]["status"] == "failure" for step in outcome["result"])
        assert "--allow-shell" in outcome["result"][0][0]["error"]

        code, out, err = await aip_task(stack, "--device", "cli-fail",
                                        str(EXAMPLES / "shell-commands.json"))
        assert code == 5, (out, err)
        assert "status: completed" in out and "failed steps: 3 of 3" in out
        assert "the task completed, but 3 of its 3 steps failed" in err

        # One failed step of two still tells.
        mixed = json.dumps({"steps": [[{"tool_name": "get_system_info"}],
                                      [{"tool_name": "read_file",
                                        "parameters": {"path": "no/such/file"}}]],
                            "continue_on_failure": True})
        code, out, err = await aip_task(stack, "--device", "cli-fail", mixed)
        assert code == 5 and "failed steps: 1 of 2" in out, (out, err)

    code, _, err = await aip_task(stack, "--device", "cli-nobody",
                                  str(EXAMPLES / "system-facts.json"))
    assert code == 3 and "not connected" in err
    code, _, err = await aip_task(stack, "--device", "cli-nobody", "missing.json")
    assert code == 2 and "no such plan file" in err


async def test_a_closed_stdout_ends_aip_task_quietly(stack: Stack) -> None:
    """``aip-task ... | head -0``: the reader is gone before anything is printed."""
    async with aip_device(stack, "cli-pipe"):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            process = await asyncio.create_subprocess_exec(
                str(BIN / "aip-task"), "--url", stack.ws_url, "--session-service",
                stack.replica.address, "--device", "cli-pipe",
                str(EXAMPLES / "system-facts.json"), stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end, stderr=asyncio.subprocess.PIPE, env=ENV)
        finally:
            os.close(write_end)
        async with asyncio.timeout(30):
            _, err = await process.communicate()
        text = err.decode()
        assert process.returncode == 141, text
        assert "Traceback" not in text and "Exception ignored" not in text, text
        assert "task completed" in text  # it ran; only printing the result failed


async def test_shell_with_allow_shell_and_timeout(stack: Stack) -> None:
    async with aip_device(stack, "cli-shell", "--allow-shell", "--shell-timeout", "0.5"):
        code, out, err = await aip_task(stack, "--device", "cli-shell", "--json",
                                        str(EXAMPLES / "shell-commands.json"))
        assert code == 0, (out, err)
        first = json.loads(out)["result"][0][0]
        assert first["status"] == "success" and first["result"]["stdout"].startswith("Linux")

        slow = json.dumps([{"tool_name": "run_shell", "parameters": {"cmd": "sleep 5"}}])
        code, out, _ = await aip_task(stack, "--device", "cli-shell", slow)
        assert code == 1 and "timed out after 0.5s" in out


async def test_list_devices_and_device_info(stack: Stack) -> None:
    async with aip_device(stack, "cli-listed"):
        code, out, err = await aip_task(stack, "--list-devices")
        assert code == 0, err
        assert "cli-listed" in out and "linux" in out

        code, out, err = await aip_task(stack, "--list-devices", "--json",
                                        "--session-service", "")  # the HTTP fallback
        assert code == 0, err
        assert [d["device_id"] for d in json.loads(out)] == ["cli-listed"]

        code, out, err = await aip_task(stack, "--device-info", "cli-listed")
        assert code == 0, err
        info = json.loads(out)
        assert info["platform"] == "linux" and "cpu_count" in info

    code, _, err = await aip_task(stack, "--device-info", "cli-listed")
    assert code == 3 and "not connected" in err
