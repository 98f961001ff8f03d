"""``aip-task``: send a device work and show it run.

    aip-task --url ws://127.0.0.1:8000/ws --device my-laptop plan.json
    aip-task --device my-laptop '[{"tool_name": "get_system_info"}]'
    aip-task --list-devices
    aip-task --device-info my-laptop

A task is dispatched as a constellation over the WebSocket; its result (the ``task_end``)
is printed on stdout and the exit code says how it went: 0 completed, 1 failed,
2 bad usage or plan, 3 could not connect or refused, 4 timed out, 5 completed but some
steps failed (``continue_on_failure``), 130 interrupted (its session cancelled), 141
stdout closed early. Progress goes to
stderr: each step as it is sent and answered, followed through the session service's
gRPC ``WatchSession`` when ``--session-service`` is reachable (otherwise only the ack and
the end). On a terminal it is a live display; otherwise plain lines.

This module is the command's flow; what it prints is :mod:`aip_client.task_output`, the
optional gRPC calls :mod:`aip_client.task_session_api`, and ``--list-devices``
:mod:`aip_client.task_devices`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import uuid
from typing import Any

from aip_client.cli_env import EnvDefaults
from aip_client.constellation import ConstellationClient, DeviceInfoError, TaskRefused
from aip_client.device import RegistrationRefused
from aip_client.task_devices import list_devices
from aip_client.task_output import (
    EXIT_BROKEN_PIPE,
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STEPS_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Progress,
    dump,
    exit_code,
    fail,
    failed_steps,
    print_result,
)
from aip_client.task_session_api import cancel_session, open_channel, watch_session

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
DEFAULT_SESSION_SERVICE = "127.0.0.1:50051"
#: Signals that stop a running plan and cancel its session (Ctrl-C, and a polite kill).
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
CANCEL_REASON = "interrupted"
TIMEOUT_REASON = "client_timeout"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = EnvDefaults("AIP_TASK_")
    parser = argparse.ArgumentParser(
        prog="aip-task",
        description="Dispatch a plan to an AIP device and wait for its result. Exit code: "
        "0 completed, 1 failed, 2 usage, 3 connection/refused, 4 timeout, "
        "5 completed with failed steps, 130 interrupted, 141 stdout closed.",
    )
    parser.add_argument("plan", nargs="?",
                        help="a plan (a JSON file, '-' for stdin, or inline JSON text) or a "
                        "natural-language request in words, for a session service "
                        "configured with a language model")
    parser.add_argument("--url", default=env.text("URL", DEFAULT_URL),
                        help=f"the server's WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--device", default=env.text("DEVICE", None),
                        help="the device that runs the plan")
    parser.add_argument("--list-devices", action="store_true",
                        help="list the connected devices and exit")
    parser.add_argument("--device-info", metavar="DEVICE",
                        help="print a device's info and exit")
    parser.add_argument("--task-name", help="the task's name (default: generated)")
    parser.add_argument("--timeout", type=float, default=env.number("TIMEOUT", 300),
                        help="seconds to wait for the task's end (default 300)")
    parser.add_argument("--session-service",
                        default=env.text("SESSION_SERVICE", DEFAULT_SESSION_SERVICE),
                        help="HOST:PORT of the session service's gRPC API, for live step "
                        f"progress and --list-devices (default {DEFAULT_SESSION_SERVICE}); "
                        "'' to disable")
    parser.add_argument("--session-token", default=env.text("SESSION_TOKEN", None),
                        help="bearer token for a session service started with --auth-token")
    parser.add_argument("--no-progress", action="store_true", help="show no progress")
    parser.add_argument("--json", action="store_true",
                        help="print the outcome as one JSON object")
    parser.add_argument("--token", default=env.text("TOKEN", None),
                        help="credentials, sent as ?token= on the URL")
    parser.add_argument("--api-key", default=env.text("API_KEY", None),
                        help="X-API-Key for the gateway's HTTP API (--list-devices fallback)")
    parser.add_argument("--client-id", default=None,
                        help="this constellation's client_id (default: generated)")
    env.check(parser)
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
    """The request from a file, stdin (``-``), inline JSON, or inline words.

    JSON (from anywhere) must be valid: it is meant as a plan. Words that name no file
    are a natural-language request, for a session service with a language model; a
    single word that looks like a file name (``plan.json``) is taken as a missing file.

    :raises ValueError: invalid JSON, or a missing file.
    """
    def is_json(text: str) -> bool:
        return text.lstrip()[:1] in ("{", "[")

    if source == "-":
        text = sys.stdin.read()
    elif os.path.isfile(source):
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    elif is_json(source):
        text = source
    elif " " in source.strip():
        return source  # words: natural language
    else:
        raise ValueError(f"no such plan file: {source}")
    if not is_json(text):
        return text  # a file or stdin holding a natural-language request
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


# ------------------------------------------------------------------------ commands


async def run_plan(args: argparse.Namespace, plan: str) -> int:
    progress = Progress(sys.stderr, enabled=not args.no_progress, steps=plan_steps(plan))
    progress.start()
    channel: asyncio.Task[Any] | None = None
    if args.session_service and progress.enabled:  # connect while the WebSocket does
        channel = asyncio.ensure_future(open_channel(args.session_service))
    client_id = args.client_id or _client_id()
    session_id = f"{client_id}@t-{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in INTERRUPTS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, interrupted.set)
    work = asyncio.ensure_future(_run_plan(args, plan, progress, channel, client_id,
                                           session_id))
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        # Cancel through the session service while the socket is still open: closing
        # it first would end the session too, but as if this client had vanished.
        progress.line(f"interrupted: cancelling session {session_id}")
        outcome = await cancel_session(args.session_service, session_id,
                                       args.session_token, CANCEL_REASON)
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        return fail(f"interrupted; session {session_id} {outcome}", EXIT_INTERRUPTED)
    finally:
        waiter.cancel()
        for sig in INTERRUPTS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        progress.finish()
        if channel is not None:
            channel.cancel()
            with contextlib.suppress(BaseException):
                opened = await channel
                if opened is not None:
                    await opened.close()


async def _run_plan(args: argparse.Namespace, plan: str, progress: Progress,
                    channel: asyncio.Task[Any] | None, client_id: str,
                    session_id: str) -> int:
    client = await _connect(args, args.device, client_id)
    if isinstance(client, int):
        return client
    watcher: asyncio.Task[bool] | None = None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        try:
            handle = await client.dispatch(plan, task_name=args.task_name,
                                           session_id=session_id, ack_timeout=min(args.timeout, 30))
        except TaskRefused as exc:
            return fail(f"task refused: {exc}", EXIT_CONNECT)
        except TimeoutError:
            return fail("the server did not acknowledge the task", EXIT_TIMEOUT)
        except ConnectionError as exc:
            return fail(f"connection lost: {exc}", EXIT_CONNECT)
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
            # Nobody will wait for it any more: stop it on the device too.
            outcome = await cancel_session(args.session_service, handle.session_id,
                                           args.session_token, TIMEOUT_REASON)
            return fail(f"timed out after {args.timeout:g}s waiting for the task's end; "
                        f"session {handle.session_id} {outcome}", EXIT_TIMEOUT)
        except ConnectionError as exc:
            return fail(f"connection lost before the task ended: {exc}", EXIT_CONNECT)
        if watcher is not None:  # let the last step's answer show before the end
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(watcher)
        progress.replay(result.result)
        progress.line(f"task {result.status}" + (f": {result.error}" if result.error else ""))
        progress.finish()
        print_result(args, result.session_id, result.task_name, result.status,
                     result.result, result.error)
        code = exit_code(result.ok, result.result)
        if code == EXIT_STEPS_FAILED:
            failed, total = failed_steps(result.result)
            fail(f"the task completed, but {failed} of its {total} steps failed", code)
        return code
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


async def _connect(args: argparse.Namespace, target_id: str,
                   client_id: str | None = None) -> ConstellationClient | int:
    """A constellation registered for ``target_id``, or the exit code once said why not."""
    client = ConstellationClient(args.url, client_id or args.client_id or _client_id(),
                                 target_id, token=args.token)
    try:
        await client.connect()
    except RegistrationRefused as exc:
        return fail(f"refused: {exc}", EXIT_CONNECT)
    except Exception as exc:
        return fail(f"cannot connect to {args.url}: {type(exc).__name__}: {exc}",
                    EXIT_CONNECT)
    return client


async def device_info(args: argparse.Namespace) -> int:
    client = await _connect(args, args.device_info)
    if isinstance(client, int):
        return client
    try:
        info = await client.device_info(timeout=min(args.timeout, 30))
    except DeviceInfoError as exc:
        return fail(str(exc), EXIT_FAILED)
    except TimeoutError:
        return fail("no device info received", EXIT_TIMEOUT)
    finally:
        await client.close()
    print(dump(info) if not args.json else json.dumps(info, default=str))
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
                code = fail(str(exc), EXIT_USAGE)
            else:
                code = asyncio.run(run_plan(args, plan))
        sys.stdout.flush()  # a closed stdout shows here, not at exit
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read stdout has gone: end quietly, and keep the interpreter's own
        # flush at exit from failing again on the same pipe.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    sys.exit(code)


if __name__ == "__main__":
    main()
