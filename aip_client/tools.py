"""Tools a device runs, and the built-in ones useful on a real machine.

A tool is a plain Python function, sync or async, registered by name in a
:class:`ToolRegistry`; a command's ``parameters`` become its keyword arguments. Sync tools
run in a worker thread, so a slow one never blocks the event loop (heartbeats keep
going). :meth:`ToolRegistry.call` never raises: an unknown tool, bad parameters or a tool
that raises give a ``failure`` result carrying the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import inspect
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aip_client import wire
from aip_client.errors import ToolFailure
from aip_client.file_tools import FileRoots, default_workdir, file_tools
from aip_client.tool_schemas import descriptor
from aip_wire.vocab import ResultStatus, ToolType

log = logging.getLogger("aip.client.tools")

Tool = Callable[..., Any]

DEFAULT_OUTPUT_CAP = 64 * 1024
DEFAULT_SHELL_TIMEOUT = 60.0
DEFAULT_KILL_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one call gave: ``status`` is ``success`` or ``failure``."""

    status: str
    result: Any = None
    error: str | None = None


def jsonable(value: Any) -> Any:
    """``value`` made JSON-safe (unknown objects become their ``str``)."""
    return json.loads(json.dumps(value, default=str))


#: The command a server sends to learn a device's tools (answered by the registry unless
#: a tool of that name is registered).
LIST_TOOLS = "list_tools"


class ToolRegistry:
    """Tools by name. Register with :meth:`add` or as a decorator with :meth:`tool`.

    Each tool has a ``tool_type`` (``action`` changes something, ``data_collection``
    only reads); ``list_tools`` answers with the descriptors of the tools of the asked
    type (all without one), see :mod:`aip_client.tool_schemas`. A tool added with
    ``listed=False`` is callable but not offered.
    """

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._types: dict[str, str] = {}
        self._unlisted: set[str] = set()
        #: Where its file tools may go, when it has the built-in ones.
        self.roots: FileRoots | None = None

    def add(self, name: str, func: Tool, tool_type: str = ToolType.ACTION,
            listed: bool = True) -> None:
        if not name:
            raise ValueError("a tool needs a name")
        if tool_type not in (ToolType.ACTION, ToolType.DATA_COLLECTION):
            raise ValueError(f"tool_type must be action or data_collection, not {tool_type!r}")
        self._tools[name] = func
        self._types[name] = str(tool_type)
        if listed:
            self._unlisted.discard(name)
        else:
            self._unlisted.add(name)

    def tool(self, name: str | None = None,
             tool_type: str = ToolType.ACTION) -> Callable[[Tool], Tool]:
        """Decorator: ``@registry.tool()`` registers a function under its own name."""

        def register(func: Tool) -> Tool:
            self.add(name or func.__name__, func, tool_type)
            return func

        return register

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)
        self._types.pop(name, None)
        self._unlisted.discard(name)

    def describe(self, tool_type: str | None = None) -> list[dict[str, Any]]:
        """The descriptors ``list_tools`` answers with, of ``tool_type`` (``None``: all)."""
        return [descriptor(name, self._tools[name], self._types[name])
                for name in self.names()
                if name not in self._unlisted
                and (tool_type is None or self._types[name] == tool_type)]

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    async def call(self, name: str, parameters: dict[str, Any] | None = None) -> ToolOutcome:
        """Run one tool; never raises (except for cancellation)."""
        func = self._tools.get(name)
        if func is None and name == LIST_TOOLS:
            asked = (parameters or {}).get("tool_type")
            if asked is not None and asked not in (ToolType.ACTION, ToolType.DATA_COLLECTION):
                return ToolOutcome(ResultStatus.FAILURE,
                                   error=f"Bad parameters for 'list_tools': tool_type must be "
                                   f"action or data_collection, not {asked!r}")
            return ToolOutcome(ResultStatus.SUCCESS, result=jsonable(self.describe(asked)))
        if func is None:
            known = ", ".join(self.names()) or "none"
            return ToolOutcome(ResultStatus.FAILURE,
                               error=f"Unknown tool '{name}' (known: {known})")
        kwargs = dict(parameters or {})
        try:
            inspect.signature(func).bind(**kwargs)
        except TypeError as exc:
            return ToolOutcome(ResultStatus.FAILURE, error=f"Bad parameters for '{name}': {exc}")
        except ValueError:
            pass  # no signature to check (a builtin); let the call decide
        try:
            if inspect.iscoroutinefunction(func):
                value = await func(**kwargs)
            else:
                value = await asyncio.to_thread(func, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            raise
        except ToolFailure as exc:
            return ToolOutcome(ResultStatus.FAILURE, result=jsonable(exc.result), error=str(exc))
        except Exception as exc:
            log.info("tool %s raised %s: %s", name, type(exc).__name__, exc)
            return ToolOutcome(ResultStatus.FAILURE, error=f"{type(exc).__name__}: {exc}")
        try:
            return ToolOutcome(ResultStatus.SUCCESS, result=jsonable(value))
        except (TypeError, ValueError) as exc:
            return ToolOutcome(ResultStatus.FAILURE, error=f"Result of '{name}' is not JSON: {exc}")


# ------------------------------------------------------------------- built-in tools


def _meminfo() -> dict[str, int]:
    """Total and available memory in bytes (Linux ``/proc/meminfo``), else empty."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return {"memory_total_bytes": values.get("MemTotal", 0),
            "memory_available_bytes": values.get("MemAvailable", 0)}


def _uptime() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/uptime", encoding="ascii") as handle:
            return float(handle.read().split()[0])
    return None


def system_info() -> dict[str, Any]:
    """Facts about this machine: OS, host, CPU, memory, disk, user, Python."""
    info: dict[str, Any] = {
        "os": platform.system(),
        "platform": platform_name(),
        "os_release": platform.release(),
        "os_version": platform.version(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "cwd": os.getcwd(),
        "home": str(Path.home()),
        "pid": os.getpid(),
        "time": wire.now_iso(),
    }
    with contextlib.suppress(Exception):
        info["user"] = getpass.getuser()
    with contextlib.suppress(OSError, AttributeError):
        info["load_average"] = list(os.getloadavg())
    with contextlib.suppress(Exception):
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME")
        if pretty:
            info["distribution"] = pretty
    info.update(_meminfo())
    uptime = _uptime()
    if uptime is not None:
        info["uptime_seconds"] = uptime
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(Path.home().anchor or "/")
        info["disk_total_bytes"], info["disk_free_bytes"] = usage.total, usage.free
    return info


def platform_name() -> str:
    """The platform as AIP names it: ``linux``, ``windows``, ``darwin``..."""
    return sys.platform.replace("win32", "windows").rstrip("0123456789") or "linux"


def get_system_info() -> dict[str, Any]:
    """Tool: facts about this machine (see :func:`system_info`)."""
    return system_info()


def _expand(path: str) -> str:
    return os.path.expanduser(path)


def _cap(data: bytes, cap: int) -> tuple[str, bool]:
    text = data[:cap].decode("utf-8", errors="replace")
    return text, len(data) > cap


def make_run_shell(timeout: float = DEFAULT_SHELL_TIMEOUT,
                   output_cap: int = DEFAULT_OUTPUT_CAP,
                   grace: float = DEFAULT_KILL_GRACE,
                   default_cwd: Path | None = None) -> Tool:
    """The ``run_shell`` tool, bounded by ``timeout`` seconds and ``output_cap`` bytes.

    A command may ask for a shorter ``timeout``, never a longer one. A non-zero exit or a
    timeout is a ``failure`` whose result still carries the (capped) output. The command
    runs in a process group of its own; on a timeout or a cancellation the whole group
    is ended (:func:`end_process_group`, SIGKILL ``grace`` seconds after SIGTERM).
    """

    async def run_shell(cmd: str, timeout: float | None = None, cwd: str | None = None,
                        check: bool = True) -> dict[str, Any]:
        limit = max_timeout if timeout is None else min(float(timeout), max_timeout)
        process = await asyncio.create_subprocess_shell(
            cmd,
            cwd=_expand(cwd) if cwd else default_cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            await end_process_group(process, kill_grace)
            stdout, stderr = await _drain(process, kill_grace)
            out, _ = _cap(stdout, cap)
            err, _ = _cap(stderr, cap)
            raise ToolFailure(f"Command timed out after {limit:g}s", {
                "cmd": cmd, "exit_code": process.returncode, "stdout": out, "stderr": err,
                "truncated": len(stdout) > cap or len(stderr) > cap,
                "duration_seconds": round(time.monotonic() - started, 3)}) from None
        except asyncio.CancelledError:
            # Its session ended or the device stops: the command and everything it
            # started go, shielded so that a second cancel cannot leave them running.
            await asyncio.shield(end_process_group(process, kill_grace))
            raise
        out, out_cut = _cap(stdout, cap)
        err, err_cut = _cap(stderr, cap)
        result = {"cmd": cmd, "exit_code": process.returncode, "stdout": out, "stderr": err,
                  "truncated": out_cut or err_cut,
                  "duration_seconds": round(time.monotonic() - started, 3)}
        if check and process.returncode != 0:
            tail = err.strip().splitlines()[-1:] or [""]
            raise ToolFailure(f"Command exited with code {process.returncode}: {tail[0]}",
                              result)
        return result

    max_timeout = float(timeout)
    cap = int(output_cap)
    kill_grace = float(grace)
    return run_shell


async def end_process_group(process: asyncio.subprocess.Process, grace: float) -> None:
    """End ``process`` and every process of its group (it was started with
    ``start_new_session``, so its pid is the group's id): SIGTERM, then SIGKILL to what is
    left once the leader exited or ``grace`` seconds passed. Grandchildren go too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await process.wait()
    # The group's id stays taken while any member lives, so this cannot hit a stranger.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await process.wait()


async def _drain(process: asyncio.subprocess.Process, grace: float) -> tuple[bytes, bytes]:
    """What is left of an ended process's output; bounded, since a process that left
    its group may still hold the pipes."""
    try:
        async with asyncio.timeout(grace):
            return await process.communicate()
    except TimeoutError:
        return b"", b""


def builtin_registry(*, allow_shell: bool = False,
                     shell_timeout: float = DEFAULT_SHELL_TIMEOUT,
                     output_cap: int = DEFAULT_OUTPUT_CAP,
                     workdir: str | Path | None = None,
                     allow_paths: Iterable[str | Path] = ()) -> ToolRegistry:
    """A registry with the built-in tools; ``run_shell`` only when ``allow_shell``.

    The file tools reach only ``workdir`` (created when missing; relative paths resolve
    in it; default :func:`~aip_client.file_tools.default_workdir` of ``"default"``) and
    ``allow_paths``; ``run_shell`` starts in ``workdir`` unless told another ``cwd``.

    :raises ValueError: an allowed path that is not an existing directory.
    """
    roots = FileRoots.of(workdir if workdir is not None else default_workdir("default"),
                         allow_paths)
    registry = ToolRegistry()
    registry.roots = roots
    registry.add("get_system_info", get_system_info, ToolType.DATA_COLLECTION)
    for name, func in file_tools(roots).items():
        registry.add(name, func, ToolType.ACTION if name == "write_file"
                     else ToolType.DATA_COLLECTION)
    if allow_shell:
        registry.add("run_shell", make_run_shell(shell_timeout, output_cap,
                                                 default_cwd=roots.workdir))
    else:  # callable, to say why it fails; never offered
        registry.add("run_shell", _shell_disabled, listed=False)
    return registry


def _shell_disabled(**_: Any) -> None:
    raise ToolFailure("run_shell is disabled on this device (start it with --allow-shell)")
