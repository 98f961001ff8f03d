"""Running ``aip-device`` and ``aip-task`` as real processes against a test stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from tests.stack import Stack, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
# The checkout under test first, whichever checkout the console scripts were installed from.
ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


async def run(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run a command to its end; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def aip_task(stack: Stack, *args: str, timeout: float = 30) -> tuple[int, str, str]:
    return await run(
        str(BIN / "aip-task"),
        "--url",
        stack.ws_url,
        "--session-service",
        stack.replica.address,
        *args,
        timeout=timeout,
    )


@contextlib.asynccontextmanager
async def aip_device(
    stack: Stack, client_id: str, *extra: str, log: Path | None = None, url: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A running ``aip-device``, registered with the stack's gateway; stopped at the end.

    Its stderr goes to ``log`` when given (so that a test can read it), else nowhere. Its
    default working directory is in a temporary directory, removed at the end.
    """
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(_sink(log)) if log else asyncio.subprocess.DEVNULL
        # Its default working directory goes under a directory of its own, not $HOME.
        data_home = files.enter_context(tempfile.TemporaryDirectory(prefix="aip-device-"))
        process = await asyncio.create_subprocess_exec(
            str(BIN / "aip-device"),
            "--url",
            url or stack.ws_url,
            "--id",
            client_id,
            "--backoff-min",
            "0.05",
            "--backoff-max",
            "0.5",
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env={**ENV, "XDG_DATA_HOME": data_home},
        )
        try:
            await wait_for(
                lambda: (
                    stack.gateway.registry.is_device_connected(client_id)
                    or process.returncode is not None
                ),
                20,
            )
            assert process.returncode is None, "aip-device exited"
            yield process
        finally:
            await stop(process)


def _sink(path: Path) -> BinaryIO:
    return open(path, "wb")  # closed by the caller's ExitStack


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def spawning_shell(pid_file: Path) -> str:
    """A shell command that starts a child ``sleep 30`` and writes the shell's pid and the
    child's to ``pid_file`` (one a line), then waits for the child."""
    return (
        f"sleep 30 & echo $$ > {pid_file}.tmp; echo $! >> {pid_file}.tmp; "
        f"mv {pid_file}.tmp {pid_file}; wait"
    )


async def pids_in(pid_file: Path, timeout: float = 15) -> list[int]:
    await wait_for(pid_file.exists, timeout, what=f"{pid_file} written")
    pids = read_pids(pid_file)
    assert len(pids) == 2 and all(alive(pid) for pid in pids), pids
    return pids


def read_pids(pid_file: Path) -> list[int]:
    return [int(line) for line in pid_file.read_text().split()]
