"""A session's command dispatcher: pending commands keyed by ``response_id``.

:meth:`CommandDispatcher.execute` sends one ``command`` frame and waits for the device's
``command_results`` with a timeout. A device that never answers (reference devices stay
silent for an unknown tool or agent) yields ``failure`` results, never a hung session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aip_wire.vocab import CommandStatus, ResultStatus

log = logging.getLogger("aip.session.dispatcher")

_RESULT_STATUSES = frozenset(ResultStatus)
# Bound once: each ``CommandStatus.X`` costs a trip through the enum's metaclass.
_ANSWERED = CommandStatus.ANSWERED


def failure(call_id: str | None, error: str) -> dict[str, Any]:
    return {"status": ResultStatus.FAILURE, "error": error, "result": None, "namespace": None,
            "call_id": call_id}


def normalize_results(raw: Any, call_ids: list[str]) -> list[dict[str, Any]]:
    """Results as the agent sees them: one dict per result with every field present.

    A device's list is kept in its order; an entry that is not an object, or a missing
    answer for an action, becomes a ``failure`` naming the problem.
    """
    if not isinstance(raw, list):
        return [failure(call_id, "the device sent no result list") for call_id in call_ids]
    results: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            results.append(failure(None, f"malformed result from the device: {item!r:.200}"))
            continue
        status = item.get("status")
        status = status.lower() if isinstance(status, str) else ResultStatus.NONE
        results.append({
            "status": status if status in _RESULT_STATUSES else ResultStatus.NONE,
            "error": item.get("error"),
            "result": item.get("result"),
            "namespace": item.get("namespace"),
            "call_id": item.get("call_id"),
        })
    answered = {item["call_id"] for item in results if item["call_id"] is not None}
    if answered or not results:
        for call_id in call_ids:
            if call_id not in answered:
                results.append(failure(call_id, "the device sent no result for this action"))
    return results


_EXPIRED = object()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(_EXPIRED)


class CommandDispatcher:
    """Pending commands of one session.

    ``deliver(frame)`` writes a command frame towards the device and returns ``False``
    when it cannot be delivered at all.
    """

    def __init__(self, session_id: str, deliver: Callable[[dict[str, Any]], bool]) -> None:
        self.session_id = session_id
        self._deliver = deliver
        self._pending: dict[str, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    async def execute(
        self, frame: dict[str, Any], call_ids: list[str], timeout: float
    ) -> list[dict[str, Any]]:
        results, _ = await self.execute_detailed(frame, call_ids, timeout)
        return results

    async def execute_detailed(
        self, frame: dict[str, Any], call_ids: list[str], timeout: float
    ) -> tuple[list[dict[str, Any]], CommandStatus]:
        """Like :meth:`execute`, also saying how the command went, for the command log:
        ``answered``, ``timeout`` or ``undeliverable``."""
        response_id: str = frame["response_id"]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[response_id] = future
        try:
            if not self._deliver(frame):
                return [failure(call_id, "the device is not reachable")
                        for call_id in call_ids], CommandStatus.UNDELIVERABLE
            # A timer rather than asyncio.wait_for, which costs a task per command.
            timer = loop.call_later(timeout, _expire, future)
            try:
                raw = await future
            finally:
                timer.cancel()
            if raw is _EXPIRED:
                log.warning(
                    "session %s: no result for command %s within %gs",
                    self.session_id, response_id, timeout,
                )
                return [
                    failure(call_id, f"no result from the device within {timeout:g}s")
                    for call_id in call_ids
                ], CommandStatus.TIMEOUT
            return normalize_results(raw, call_ids), _ANSWERED
        finally:
            self._pending.pop(response_id, None)

    def set_result(self, response_id: str, raw_results: Any) -> bool:
        """Unblock the command waiting on ``response_id``; ``False`` if none waits."""
        future = self._pending.get(response_id)
        if future is None or future.done():
            return False
        future.set_result(raw_results)
        return True
