"""``aip-device`` as a new operator runs it: confined files, fatal refusals, no secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway_service.auth import hash_token
from tests.conftest import StackFactory
from tests.integration.cli_support import BIN, aip_device, aip_task, run
from tests.stack import Stack

pytestmark = pytest.mark.timeout(90)

TOKEN = "SECRET-d3v1ce-t0ken"


async def aip_device_alone(url: str, *extra: str, workdir: Path) -> tuple[int, str, float]:
    """Run ``aip-device`` until it exits by itself: its exit code, stderr and run time."""
    started = time.monotonic()
    code, _, err = await run(
        str(BIN / "aip-device"),
        "--url",
        url,
        "--id",
        "op-dev",
        "--workdir",
        str(workdir),
        "--backoff-min",
        "0.05",
        "--backoff-max",
        "0.2",
        *extra,
        timeout=20,
    )
    return code, err, time.monotonic() - started


async def test_file_tools_stay_in_the_working_directory(stack: Stack, tmp_path: Path) -> None:
    workdir, outside = tmp_path / "work", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    workdir.mkdir()
    (workdir / "mine.txt").write_text("all mine")
    (workdir / "link").symlink_to(outside / "secret.txt")

    async def read(path: str) -> dict[str, object]:
        code, out, err = await aip_task(
            stack,
            "--device",
            "op-files",
            "--json",
            json.dumps([{"tool_name": "read_file", "parameters": {"path": path}}]),
        )
        assert code in (0, 1), err
        step: dict[str, object] = json.loads(out)["result"][0][0]
        return step

    async with aip_device(stack, "op-files", "--workdir", str(workdir)):
        for path in ("/etc/shadow", str(outside / "secret.txt"), "link", "../outside/secret.txt"):
            step = await read(path)
            assert step["status"] == "failure", (path, step)
            assert "outside the allowed roots" in str(step["error"])
            assert str(workdir.resolve()) in str(step["error"])
            assert "top secret" not in json.dumps(step)
        assert (await read("mine.txt"))["status"] == "success"
        assert (await read(str(workdir / "mine.txt")))["status"] == "success"
    async with aip_device(
        stack, "op-files", "--workdir", str(workdir), "--allow-path", str(outside)
    ):
        step = await read("link")
        assert step["status"] == "success" and "top secret" in json.dumps(step)


async def test_a_url_without_ws_ends_the_device(stack: Stack, tmp_path: Path) -> None:
    code, err, took = await aip_device_alone(
        stack.http_url.replace("http", "ws") + "/", workdir=tmp_path
    )
    assert code == 3, err
    assert "is the path /ws?" in err and "Traceback" not in err
    assert took < 15


async def test_a_wrong_token_ends_the_device(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(gateway={"tokens": f"op-dev device {hash_token(TOKEN)}"})
    code, err, _ = await aip_device_alone(stack.ws_url, "--token", "WR0NG-t0k", workdir=tmp_path)
    assert code == 4, err
    assert "bad credentials (close code 4401" in err and "--token" in err
    assert "WR0NG-t0k" not in err  # the token it was given is not logged either


async def test_the_token_never_reaches_the_log(make_stack: StackFactory, tmp_path: Path) -> None:
    stack = await make_stack(gateway={"tokens": f"op-dev device {hash_token(TOKEN)}"})
    log = tmp_path / "device.log"
    async with aip_device(
        stack,
        "op-dev",
        "--log-level",
        "debug",
        "--workdir",
        str(tmp_path),
        log=log,
        url=f"{stack.ws_url}?token={TOKEN}",
    ):
        code, _, err = await aip_task(
            stack, "--device", "op-dev", "--token", "x", '[{"tool_name": "get_system_info"}]'
        )
        assert code == 3, err  # the constellation has no token: refused
    text = log.read_text()
    assert "registered at" in text and "token=***" in text
    assert TOKEN not in text
    assert "device id op-dev (from --id)" in text
