"""A running task's steps as MCP progress notifications.

MCP wants each notification's ``progress`` above the previous one. A session's updates
(``WatchSession``) say a command was sent, its results came back, the model answered or
the session waits for its device; the counter turns them into a number that only grows:
``n + 0.5`` while the (n+1)-th command is out, ``n`` once n commands were answered, with
the plan's step count as ``total`` when it is known (0 for the llm agent: unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SENT = "command_sent"
ANSWERED = "results_received"
QUEUED = "queued"
MODEL_TURN = "model_turn"


@dataclass(frozen=True, slots=True)
class Report:
    progress: float
    total: float | None
    message: str


class StepCounter:
    """Reports for one session's updates, in the order they come."""

    def __init__(self) -> None:
        self.answered = 0
        self.sent = 0
        self.last = 0.0

    def _report(self, progress: float, total: int, message: str) -> Report | None:
        if progress <= self.last and self.last > 0:
            return None
        self.last = progress
        return Report(progress, float(total) if total > 0 else None, message)

    def update(self, kind: str, steps_total: int, detail: str = "") -> Report | None:
        """The report an update of ``kind`` gives, or ``None`` when it tells nothing new."""
        if kind == SENT:
            self.sent += 1
            step = self.answered + 1
            return self._report(self.answered + 0.5, steps_total,
                                f"step {step}: sent {detail}".rstrip())
        if kind == ANSWERED:
            self.answered += 1
            return self._report(float(self.answered), steps_total,
                                f"step {self.answered}: {detail or 'answered'}")
        if kind == QUEUED:
            # Before anything ran: progress 0, the only report that may repeat it.
            if self.last > 0:
                return None
            return Report(0.0, None, f"waiting for the device ({detail})" if detail
                          else "waiting for the device")
        return None  # a model turn, or anything else: no step of its own


def tool_names(actions: Any) -> str:
    """``click, type`` for a command's actions (``detail_json`` of ``command_sent``)."""
    if not isinstance(actions, list):
        return ""
    return ", ".join(str(action.get("tool_name")) for action in actions
                     if isinstance(action, dict) and action.get("tool_name"))


def statuses(results: Any) -> str:
    """``success, failure`` for a command's results (``results_received``)."""
    if not isinstance(results, list):
        return ""
    return ", ".join(str(result.get("status")) for result in results
                     if isinstance(result, dict) and result.get("status"))
