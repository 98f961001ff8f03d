"""aip_client without sockets: the tool registry, the built-in tools, client frames."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest

from aip_client import wire
from aip_client.cli_task import load_plan, plan_steps
from aip_client.device import backoff_delay
from aip_client.tools import ToolFailure, ToolRegistry, builtin_registry, system_info


async def test_registry_runs_sync_and_async_tools() -> None:
    registry = ToolRegistry()

    @registry.tool()
    def add(a: int, b: int = 1) -> int:
        return a + b

    @registry.tool("shout")
    async def loud(text: str) -> str:
        return text.upper()

    assert registry.names() == ["add", "shout"]
    assert (await registry.call("add", {"a": 2})).result == 3
    outcome = await registry.call("shout", {"text": "hi"})
    assert (outcome.status, outcome.result, outcome.error) == ("success", "HI", None)


async def test_registry_turns_every_problem_into_a_failure() -> None:
    registry = ToolRegistry()
    registry.add("boom", lambda: 1 / 0)

    def refuse() -> None:
        raise ToolFailure("no", result={"partial": True})

    registry.add("refuse", refuse)
    unknown = await registry.call("nope", {})
    assert unknown.status == "failure" and "Unknown tool 'nope'" in (unknown.error or "")
    boom = await registry.call("boom", None)
    assert boom.status == "failure" and boom.error == "ZeroDivisionError: division by zero"
    bad = await registry.call("boom", {"x": 1})
    assert bad.status == "failure" and "Bad parameters" in (bad.error or "")
    refused = await registry.call("refuse")
    assert (refused.status, refused.error, refused.result) == ("failure", "no",
                                                              {"partial": True})


async def test_sync_tools_run_off_the_event_loop() -> None:
    registry = ToolRegistry()
    registry.add("block", lambda: time.sleep(0.3))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    await registry.call("block")
    ticker.cancel()
    assert ticks >= 5


async def test_results_are_made_json_safe() -> None:
    registry = ToolRegistry()
    registry.add("path", lambda: {"p": Path("/tmp")})
    assert (await registry.call("path")).result == {"p": "/tmp"}


async def test_file_tools(tmp_path: Path) -> None:
    registry = builtin_registry(workdir=tmp_path)
    target = tmp_path / "sub" / "f.txt"
    written = await registry.call("write_file", {"path": str(target), "content": "abc",
                                                 "make_dirs": True})
    assert written.status == "success" and written.result["size"] == 3
    await registry.call("write_file", {"path": str(target), "content": "def", "append": True})
    read = await registry.call("read_file", {"path": str(target), "max_bytes": 4})
    assert read.result["content"] == "abcd" and read.result["truncated"] is True
    listing = await registry.call("list_directory", {"path": str(tmp_path / "sub")})
    assert [(e["name"], e["type"], e["size"]) for e in listing.result["entries"]] == [
        ("f.txt", "file", 6)]
    missing = await registry.call("read_file", {"path": str(tmp_path / "none")})
    assert missing.status == "failure" and "FileNotFoundError" in (missing.error or "")


async def test_system_info_describes_the_machine() -> None:
    info = system_info()
    assert info["platform"] == "linux" and info["hostname"] and info["cpu_count"] >= 1
    json.dumps(info)
    assert (await builtin_registry().call("get_system_info")).result["os"] == "Linux"


async def test_shell_is_off_by_default_and_bounded_when_on() -> None:
    off = await builtin_registry().call("run_shell", {"cmd": "echo hi"})
    assert off.status == "failure" and "--allow-shell" in (off.error or "")

    shell = builtin_registry(allow_shell=True, shell_timeout=0.5, output_cap=10)
    ok = await shell.call("run_shell", {"cmd": "echo hello; echo err >&2"})
    assert ok.status == "success"
    assert ok.result["stdout"] == "hello\n" and ok.result["stderr"] == "err\n"
    capped = await shell.call("run_shell", {"cmd": "seq 1 1000"})
    assert len(capped.result["stdout"]) == 10 and capped.result["truncated"] is True
    started = time.monotonic()
    slow = await shell.call("run_shell", {"cmd": "sleep 10", "timeout": 30})
    assert time.monotonic() - started < 3  # capped at the configured 0.5 s
    assert slow.status == "failure" and "timed out after 0.5s" in (slow.error or "")
    failed = await shell.call("run_shell", {"cmd": "echo out; echo bad >&2; exit 3"})
    assert failed.status == "failure" and "code 3: bad" in (failed.error or "")
    assert failed.result["stdout"] == "out\n"
    unchecked = await shell.call("run_shell", {"cmd": "exit 3", "check": False})
    assert unchecked.status == "success" and unchecked.result["exit_code"] == 3


@pytest.mark.parametrize("message", [
    b"\xff", "not json", "[]", "{}", '{"type": "heartbeat"}',
    '{"type": "register_confirm", "status": "ok"}',
    '{"type": "heartbeat", "status": "success"}',
    '{"type": "command", "status": "continue", "actions": "x"}',
    '{"type": "command", "status": "continue", "actions": [{"parameters": {}}]}',
    '{"type": "command", "status": "continue", "actions": [{"tool_name": "t", '
    '"tool_type": "weird"}]}',
    '{"type": "task_end", "status": "completed", "session_id": 5}',
])
def test_strict_clients_drop_frames_outside_the_spec(message: str | bytes) -> None:
    assert wire.parse_server_frame(message) is None


def test_server_frames_are_read_leniently() -> None:
    frame = wire.parse_server_frame(json.dumps({
        "type": "COMMAND", "status": "Continue", "session_id": "s", "response_id": "r",
        "actions": [{"tool_name": "t", "parameters": None, "call_id": 7}], "extra": 1,
    }).encode())
    assert frame is not None
    assert frame["type"] == "command" and frame["status"] == "continue"
    assert frame["actions"] == [{"tool_name": "t", "parameters": {}, "tool_type": "action",
                                 "call_id": "7"}]


def test_client_frames_carry_every_field() -> None:
    command = {"type": "command", "status": "continue", "session_id": "s@t-1",
               "task_name": "a/b", "response_id": "r7", "actions": []}
    frame = wire.command_results_frame("dev", command, [wire.action_result("c", "success")])
    assert set(frame) == set(wire.CLIENT_FIELDS)
    assert frame["type"] == "command_results" and frame["prev_response_id"] == "r7"
    assert frame["session_id"] == "s@t-1" and frame["status"] == "continue"
    assert frame["action_results"] == [{"status": "success", "error": None, "result": None,
                                        "namespace": None, "call_id": "c"}]
    register = wire.register_frame("dev", "device", {"platform": "linux"})
    assert register["status"] == "ok" and register["timestamp"].endswith("+00:00")
    assert wire.with_token("ws://h:1/ws?a=1", "s3cret") == "ws://h:1/ws?a=1&token=s3cret"


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2 ** n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0


def test_plans_load_from_files_or_inline(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"steps": [[{"tool_name": "a"}], {"actions": [{"tool_name": "b"}]}]}')
    text = load_plan(str(path))
    assert [[c["tool_name"] for c in step] for step in plan_steps(text)] == [["a"], ["b"]]
    assert plan_steps(load_plan('[{"tool_name": "x"}]')) == [[{"tool_name": "x"}]]
    with pytest.raises(ValueError, match="no such plan file"):
        load_plan(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="not valid JSON"):
        load_plan("{oops")


def test_words_are_a_natural_language_request(tmp_path: Path) -> None:
    assert load_plan("open the editor and type hello") == "open the editor and type hello"
    words = tmp_path / "request.txt"
    words.write_text("collect the disk usage of /var\n")
    assert load_plan(str(words)) == "collect the disk usage of /var\n"
    assert plan_steps("open the editor") == []
