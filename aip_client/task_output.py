"""What ``aip-task`` shows: step progress on stderr, the outcome on stdout, exit codes.

Kept apart from the command's flow (:mod:`aip_client.cli_task`) so that how a task is
reported can change without touching how it is dispatched and awaited.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, TextIO

from aip_wire.vocab import ResultStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECT, EXIT_TIMEOUT = 0, 1, 2, 3, 4
#: The task completed, but some of its steps failed (``continue_on_failure``).
EXIT_STEPS_FAILED = 5
#: Interrupted (Ctrl-C or SIGTERM) while a plan ran; its session was cancelled.
EXIT_INTERRUPTED = 130
#: Stdout was closed before everything was written (``aip-task ... | head -1``), as for a
#: process ended by SIGPIPE.
EXIT_BROKEN_PIPE = 141


def failed_steps(result: Any) -> tuple[int, int]:
    """``(failed, total)`` steps of a task's result, the default agent's list of step
    results; a step failed when any of its actions did. ``(0, 0)`` for other results."""
    if not isinstance(result, list):
        return 0, 0
    failed = sum(
        1 for step in result
        if isinstance(step, list) and any(
            isinstance(action, dict) and action.get("status") == ResultStatus.FAILURE
            for action in step))
    return failed, len(result)


def exit_code(ok: bool, result: Any) -> int:
    """The exit code of a task that ended: failed, completed, or completed with failed
    steps."""
    if not ok:
        return EXIT_FAILED
    return EXIT_STEPS_FAILED if failed_steps(result)[0] else EXIT_OK


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def fail(message: str, code: int) -> int:
    print(f"aip-task: {message}", file=sys.stderr)
    return code


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

    def watching(self, steps_done: int, steps_total: int, queue_position: int = 0) -> None:
        # The steps before this moment follow as replayed events, so numbering goes on
        # from those events rather than from steps_done.
        self.total = steps_total or self.total
        if queue_position:
            self.queued(queue_position)
        else:
            self.status = "running"

    def queued(self, position: int) -> None:
        """The session waits for its device, behind the sessions that run on it."""
        self.status = f"queued ({position})"
        self.line(f"waiting for the device: position {position} in its queue")

    def session_started(self) -> None:
        if self.status.startswith("queued"):
            self.line("the device is free: the session starts")
        self.status = "running"

    def model_turn(self, turn: dict[str, Any]) -> None:
        """One turn of the language-model agent: the tools it chose, or its answer."""
        calls = turn.get("tool_calls") or []
        usage = turn.get("usage") or {}
        tokens = f" ({usage.get('total_tokens')} tokens)" if usage.get("total_tokens") else ""
        if calls:
            chosen = ", ".join(str(call.get("name", "?")) for call in calls
                               if isinstance(call, dict))
            self.line(f"model chose: {chosen}{tokens}")
        else:
            text = str(turn.get("refusal") or turn.get("text") or "").replace("\n", " ")
            self.line(f"model answered: {text[:200]}{tokens}")

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


# ------------------------------------------------------------------------ outcome


def print_result(args: argparse.Namespace, session_id: str, task_name: str | None,
                 status: str, result: Any, error: str | None) -> None:
    failed, total = failed_steps(result)
    if args.json:
        print(json.dumps({"session_id": session_id, "task_name": task_name,
                          "device": args.device, "status": status, "result": result,
                          "error": error, "failed_steps": failed, "steps": total},
                         ensure_ascii=False, default=str))
        return
    print(f"status: {status}")
    print(f"session: {session_id}")
    if error:
        print(f"error: {error}")
    if failed:
        print(f"failed steps: {failed} of {total}")
    print("result:")
    print(dump(result))


def print_devices(devices: list[dict[str, Any]], as_json: bool) -> None:
    """The ``--list-devices`` listing: one JSON array, or a table sorted by device."""
    devices.sort(key=lambda d: str(d["device_id"]))
    if as_json:
        print(json.dumps(devices, default=str))
        return
    if not devices:
        print("no devices connected")
        return
    print(f"{'DEVICE':<32} {'PLATFORM':<10} {'SESSIONS':>8}  HOST")
    for device in devices:
        info = device.get("device_info") or {}
        sessions = device["active_sessions"]
        print(f"{device['device_id']!s:<32} {device['platform'] or '?'!s:<10} "
              f"{'-' if sessions is None else sessions!s:>8}  {info.get('hostname', '')}")
