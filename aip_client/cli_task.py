"""``aip-task``: send a device work and show it run.

    aip-task --url ws://127.0.0.1:8000/ws --device my-laptop plan.json
    aip-task --device my-laptop '[{"tool_name": "get_system_info"}]'
    aip-task --list-devices
    aip-task --device-info my-laptop

A task is dispatched as a constellation over the WebSocket; its result (the ``task_end``)
is printed on stdout and the exit code says how it went: 0 completed, 1 failed,
2 bad usage or plan, 3 could not connect or refused, 4 timed out. Progress goes to
stderr: each step as it is sent and answered, followed through the session service's
gRPC ``WatchSession`` when ``--session-service`` is reachable (otherwise only the ack and
the end). On a terminal it is a live display; otherwise plain lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from aip_client.constellation import ConstellationClient, DeviceInfoError, TaskRefused
from aip_client.device import RegistrationRefused
from aip_wire.vocab import ClientType, ResultStatus

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
DEFAULT_SESSION_SERVICE = "127.0.0.1:50051"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECT, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"AIP_TASK_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aip-task",
        description="Dispatch a plan to an AIP device and wait for its result. Exit code: "
        "0 completed, 1 failed, 2 usage, 3 connection/refused, 4 timeout.",
    )
    parser.add_argument("plan", nargs="?",
                        help="a plan: a JSON file, '-' for stdin, or inline JSON text")
    parser.add_argument("--url", default=_env("URL", DEFAULT_URL),
                        help=f"the server's WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--device", default=_env("DEVICE", None),
                        help="the device that runs the plan")
    parser.add_argument("--list-devices", action="store_true",
                        help="list the connected devices and exit")
    parser.add_argument("--device-info", metavar="DEVICE",
                        help="print a device's info and exit")
    parser.add_argument("--task-name", help="the task's name (default: generated)")
    parser.add_argument("--timeout", type=float, default=float(_env("TIMEOUT", 300)),
                        help="seconds to wait for the task's end (default 300)")
    parser.add_argument("--session-service", default=_env("SESSION_SERVICE",
                                                          DEFAULT_SESSION_SERVICE),
                        help="HOST:PORT of the session service's gRPC API, for live step "
                        f"progress and --list-devices (default {DEFAULT_SESSION_SERVICE}); "
                        "'' to disable")
    parser.add_argument("--session-token", default=_env("SESSION_TOKEN", None),
                        help="bearer token for a session service started with --auth-token")
    parser.add_argument("--no-progress", action="store_true", help="show no progress")
    parser.add_argument("--json", action="store_true",
                        help="print the outcome as one JSON object")
    parser.add_argument("--token", default=_env("TOKEN", None),
                        help="credentials, sent as ?token= on the URL")
    parser.add_argument("--api-key", default=_env("API_KEY", None),
                        help="X-API-Key for the gateway's HTTP API (--list-devices fallback)")
    parser.add_argument("--client-id", default=None,
                        help="this constellation's client_id (default: generated)")
    args = parser.parse_args(argv)
    modes = sum(bool(x) for x in (args.list_devices, args.device_info, args.plan))
    if modes != 1:
        parser.error("give a plan, --list-devices or --device-info DEVICE")
    if args.plan and not args.device:
        parser.error("--device is required to run a plan")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def load_plan(source: str) -> str:
    """The plan text from a file, stdin (``-``) or inline JSON.

    :raises ValueError: neither an existing file nor inline JSON, or not valid JSON.
    """
    if source == "-":
        text = sys.stdin.read()
    elif os.path.isfile(source):
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    elif source.lstrip()[:1] in ("{", "["):
        text = source
    else:
        raise ValueError(f"no such plan file: {source}")
    try:
        json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the plan is not valid JSON: {exc}") from None
    return text


def plan_steps(plan: str) -> list[list[dict[str, Any]]]:
    """The commands of each step of a plan (the default agent's forms), best effort."""
    try:
        data = json.loads(plan)
    except ValueError:
        return []
    steps = data.get("steps") if isinstance(data, dict) else data
    if not isinstance(steps, list):
        return []
    out: list[list[dict[str, Any]]] = []
    for step in steps:
        if isinstance(step, dict):
            step = step.get("actions", [step] if "tool_name" in step else [])
        out.append([a for a in step if isinstance(a, dict)] if isinstance(step, list) else [])
    return out


def _client_id() -> str:
    return f"aip-task-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------ progress


class Progress:
    """Progress of one task on ``stream``: live on a terminal, plain lines otherwise."""

    SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream: TextIO, enabled: bool = True,
                 steps: list[list[dict[str, Any]]] | None = None) -> None:
        self.stream = stream
        self.steps = steps or []
        self._sent_shown: set[int] = set()
        self._answered_shown: set[int] = set()
        self.enabled = enabled
        self.live = enabled and stream.isatty()
        self.started = time.monotonic()
        self.total = len(self.steps)
        self.done = 0
        self.status = "connecting"
        self._next_step = 1
        self._steps: dict[str, int] = {}
        self._frame = 0
        self._ticker: asyncio.Task[None] | None = None

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.2f}s"

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.live else text

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        clear = "\r\x1b[K" if self.live else ""
        self.stream.write(f"{clear}[{self._elapsed()}] {text}\n")
        self._status_line()
        self.stream.flush()

    def _status_line(self) -> None:
        if not self.live:
            return
        spin = self.SPINNER[self._frame % len(self.SPINNER)]
        steps = f" · step {self.done}/{self.total}" if self.total else ""
        bar = ""
        if self.total:
            width = 20
            filled = int(width * self.done / self.total)
            bar = " [" + "#" * filled + "-" * (width - filled) + "]"
        self.stream.write(f"\r\x1b[K{spin} {self.status}{bar}{steps} · {self._elapsed()}")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._frame += 1
            self._status_line()
            self.stream.flush()

    def start(self) -> None:
        if self.live and self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())

    def finish(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    # session updates (WatchSession)

    def watching(self, steps_done: int, steps_total: int) -> None:
        # The steps before this moment follow as replayed events, so numbering goes on
        # from those events rather than from steps_done.
        self.total = steps_total or self.total
        self.status = "running"

    def _label(self, number: int) -> str:
        return f"step {number}/{self.total}" if self.total else f"step {number}"

    def command_sent(self, response_id: str, actions: list[dict[str, Any]],
                     steps_total: int) -> None:
        self.total = steps_total or self.total
        number = self._next_step
        self._next_step += 1
        self._steps[response_id] = number
        self._sent(number, actions)

    def _sent(self, number: int, actions: list[dict[str, Any]]) -> None:
        self._sent_shown.add(number)
        tools = ", ".join(_describe_action(a) for a in actions) or "(no commands)"
        self.line(f"{self._label(number)} sent: {tools}")

    def results_received(self, response_id: str, results: list[dict[str, Any]],
                         steps_total: int) -> None:
        self.total = steps_total or self.total
        number = self._steps.pop(response_id, None)
        if number is None:  # sent before we started watching: show it from the plan
            number = self._next_step
            self._next_step += 1
            if number not in self._sent_shown:
                index = number - 1
                self._sent(number, self.steps[index] if index < len(self.steps) else [])
        self._answered(number, results)

    def _answered(self, number: int, results: list[dict[str, Any]]) -> None:
        self._answered_shown.add(number)
        self.done = max(self.done, number)
        planned = self.steps[number - 1] if 0 < number <= len(self.steps) else []
        for index, result in enumerate(results or [{"status": "none"}]):
            if not isinstance(result, dict):
                continue
            status = str(result.get("status"))
            mark = (self._paint("✓", "32") if status == ResultStatus.SUCCESS
                    else self._paint("✗", "31") if status == ResultStatus.FAILURE else "·")
            tool = planned[index].get("tool_name") if index < len(planned) else None
            name = f"{tool} " if tool and len(results) > 1 else ""
            detail = f": {result['error']}" if result.get("error") else ""
            self.line(f"{self._label(number)} answered {name}{mark} {status}{detail}")

    def replay(self, result: Any) -> None:
        """Show the steps a live watch missed, from the plan and the task's result
        (the default agent's result is the list of step results)."""
        if not isinstance(result, list):
            return
        for index, step_results in enumerate(result):
            number = index + 1
            if not isinstance(step_results, list):
                continue
            if number not in self._sent_shown:
                actions = self.steps[index] if index < len(self.steps) else []
                self._sent(number, actions)
            if number not in self._answered_shown:
                self._answered(number, step_results)


def _describe_action(action: dict[str, Any]) -> str:
    name = str(action.get("tool_name"))
    params = action.get("parameters") or {}
    if not params:
        return name
    text = json.dumps(params, ensure_ascii=False, default=str)
    return f"{name} {text if len(text) <= 60 else text[:57] + '...'}"


async def open_channel(address: str) -> Any:
    """A ready gRPC channel to the session service, or ``None`` when unreachable."""
    try:
        import grpc
    except ImportError:
        return None
    channel = grpc.aio.insecure_channel(address)
    try:
        await asyncio.wait_for(channel.channel_ready(), 2)
    except BaseException:
        await channel.close()
        raise
    return channel


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata for a session service that requires a shared token."""
    return (("authorization", f"Bearer {token}"),) if token else ()


async def watch_session(channel: Any, session_id: str, progress: Progress,
                        token: str | None = None) -> bool:
    """Follow a session's steps through gRPC ``WatchSession``; ``False`` if unavailable."""
    try:
        import grpc

        from aip_grpc import session_api_pb2, session_api_pb2_grpc
    except ImportError:
        return False
    if channel is None:
        return False
    stub = session_api_pb2_grpc.SessionApiStub(channel)
    try:
        async for update in stub.WatchSession(
            session_api_pb2.WatchSessionRequest(session_id=session_id),
            metadata=_metadata(token),
        ):
            info = update.session
            detail = json.loads(update.detail_json) if update.detail_json else None
            if update.kind == "watching":
                progress.watching(info.steps_done, info.steps_total)
            elif update.kind == "command_sent":
                progress.command_sent(update.response_id, detail or [], info.steps_total)
            elif update.kind == "results_received":
                progress.results_received(update.response_id, detail or [],
                                          info.steps_total)
            elif update.kind == "ended":
                return True
    except grpc.aio.AioRpcError:
        return False
    return True


# ------------------------------------------------------------------------ commands


async def run_plan(args: argparse.Namespace, plan: str) -> int:
    progress = Progress(sys.stderr, enabled=not args.no_progress, steps=plan_steps(plan))
    progress.start()
    channel: asyncio.Task[Any] | None = None
    if args.session_service and progress.enabled:  # connect while the WebSocket does
        channel = asyncio.ensure_future(open_channel(args.session_service))
    try:
        return await _run_plan(args, plan, progress, channel)
    finally:
        progress.finish()
        if channel is not None:
            channel.cancel()
            with contextlib.suppress(BaseException):
                opened = await channel
                if opened is not None:
                    await opened.close()


async def _run_plan(args: argparse.Namespace, plan: str, progress: Progress,
                    channel: asyncio.Task[Any] | None) -> int:
    client = await _connect(args, args.device)
    if isinstance(client, int):
        return client
    watcher: asyncio.Task[bool] | None = None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        try:
            handle = await client.dispatch(plan, task_name=args.task_name,
                                           ack_timeout=min(args.timeout, 30))
        except TaskRefused as exc:
            return _fail(f"task refused: {exc}", EXIT_CONNECT)
        except TimeoutError:
            return _fail("the server did not acknowledge the task", EXIT_TIMEOUT)
        except ConnectionError as exc:
            return _fail(f"connection lost: {exc}", EXIT_CONNECT)
        progress.status = "running"
        progress.line(f"task {handle.task_name} accepted on {args.device} "
                      f"(session {handle.session_id})")
        if channel is not None:
            watcher = asyncio.ensure_future(
                _watch(channel, handle.session_id, progress, args.session_token)
            )
        try:
            result = await handle.wait(max(0.0, deadline - loop.time()))
        except TimeoutError:
            progress.line(f"no result within {args.timeout:g}s")
            return _fail(f"timed out after {args.timeout:g}s waiting for the task's end "
                         f"(session {handle.session_id})", EXIT_TIMEOUT)
        except ConnectionError as exc:
            return _fail(f"connection lost before the task ended: {exc}", EXIT_CONNECT)
        if watcher is not None:  # let the last step's answer show before the end
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(watcher), 1.0)
        progress.replay(result.result)
        progress.line(f"task {result.status}" + (f": {result.error}" if result.error else ""))
        progress.finish()
        _print_result(args, result.session_id, result.task_name, result.status,
                      result.result, result.error)
        return EXIT_OK if result.ok else EXIT_FAILED
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        await client.close()


async def _watch(channel: asyncio.Task[Any], session_id: str, progress: Progress,
                 token: str | None) -> bool:
    try:
        opened = await channel
    except Exception:
        return False
    return await watch_session(opened, session_id, progress, token)


def _print_result(args: argparse.Namespace, session_id: str, task_name: str | None,
                  status: str, result: Any, error: str | None) -> None:
    if args.json:
        print(json.dumps({"session_id": session_id, "task_name": task_name,
                          "device": args.device, "status": status, "result": result,
                          "error": error}, ensure_ascii=False, default=str))
        return
    print(f"status: {status}")
    print(f"session: {session_id}")
    if error:
        print(f"error: {error}")
    print("result:")
    print(_dump(result))


def _fail(message: str, code: int) -> int:
    print(f"aip-task: {message}", file=sys.stderr)
    return code


async def _connect(args: argparse.Namespace, target_id: str) -> ConstellationClient | int:
    """A constellation registered for ``target_id``, or the exit code once said why not."""
    client = ConstellationClient(args.url, args.client_id or _client_id(), target_id,
                                 token=args.token)
    try:
        await client.connect()
    except RegistrationRefused as exc:
        return _fail(f"refused: {exc}", EXIT_CONNECT)
    except Exception as exc:
        return _fail(f"cannot connect to {args.url}: {type(exc).__name__}: {exc}",
                     EXIT_CONNECT)
    return client


async def device_info(args: argparse.Namespace) -> int:
    client = await _connect(args, args.device_info)
    if isinstance(client, int):
        return client
    try:
        info = await client.device_info(timeout=min(args.timeout, 30))
    except DeviceInfoError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except TimeoutError:
        return _fail("no device info received", EXIT_TIMEOUT)
    finally:
        await client.close()
    print(_dump(info) if not args.json else json.dumps(info, default=str))
    return EXIT_OK


async def _devices_grpc(address: str, token: str | None) -> list[dict[str, Any]] | None:
    try:
        import grpc

        from aip_grpc import session_api_pb2, session_api_pb2_grpc
    except ImportError:
        return None
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), 2)
            stub = session_api_pb2_grpc.SessionApiStub(channel)
            reply = await stub.ListDevices(session_api_pb2.ListDevicesRequest(), timeout=5,
                                           metadata=_metadata(token))
        except (TimeoutError, grpc.aio.AioRpcError):
            return None
    return [{"device_id": d.device_id, "platform": d.platform,
             "active_sessions": d.active_sessions, "gateway_id": d.gateway_id,
             "device_info": json.loads(d.device_info_json) if d.device_info_json else None}
            for d in reply.devices]


def _http_url(ws_url: str, path: str) -> str:
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _devices_http(args: argparse.Namespace) -> list[dict[str, Any]]:
    request = urllib.request.Request(_http_url(args.url, "/api/clients"))
    if args.api_key:
        request.add_header("X-API-Key", args.api_key)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    return [{"device_id": c.get("client_id"), "platform": c.get("platform"),
             "active_sessions": None, "gateway_id": None, "device_info": None}
            for c in body.get("clients", [])
            if c.get("client_type", ClientType.DEVICE) == ClientType.DEVICE]


async def list_devices(args: argparse.Namespace) -> int:
    devices = (await _devices_grpc(args.session_service, args.session_token)
               if args.session_service else None)
    if devices is None:
        try:
            devices = await asyncio.to_thread(_devices_http, args)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            return _fail(f"cannot list devices (gRPC {args.session_service or 'disabled'}, "
                         f"HTTP {_http_url(args.url, '/api/clients')}): {exc}", EXIT_CONNECT)
    devices.sort(key=lambda d: str(d["device_id"]))
    if args.json:
        print(json.dumps(devices, default=str))
        return EXIT_OK
    if not devices:
        print("no devices connected")
        return EXIT_OK
    print(f"{'DEVICE':<32} {'PLATFORM':<10} {'SESSIONS':>8}  HOST")
    for device in devices:
        info = device.get("device_info") or {}
        sessions = device["active_sessions"]
        print(f"{device['device_id']!s:<32} {device['platform'] or '?'!s:<10} "
              f"{'-' if sessions is None else sessions!s:>8}  {info.get('hostname', '')}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.list_devices:
            code = asyncio.run(list_devices(args))
        elif args.device_info:
            code = asyncio.run(device_info(args))
        else:
            try:
                plan = load_plan(args.plan)
            except (OSError, ValueError) as exc:
                code = _fail(str(exc), EXIT_USAGE)
            else:
                code = asyncio.run(run_plan(args, plan))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
