"""Task names end up in file names and logs: only ``[A-Za-z0-9._-]``, never a leading dot.

On the WebSocket path a bad name is repaired (:func:`sanitize_task_name`) because real
clients send names such as ``galaxy/x/t-1``; on the HTTP path it is refused
(:func:`task_name_problem` gives the reason for the 400).
"""

from __future__ import annotations

import re
import uuid

MAX_TASK_NAME = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def new_task_name() -> str:
    return f"task-{uuid.uuid4().hex[:12]}"


def sanitize_task_name(name: str | None) -> str:
    """A safe task name derived from ``name``; a fresh one when nothing usable remains."""
    if not name:
        return new_task_name()
    cleaned = _UNSAFE.sub("_", name)[:MAX_TASK_NAME]
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    if not cleaned.strip("._-"):
        return new_task_name()
    return cleaned


def task_name_problem(name: str) -> str | None:
    """Why ``name`` is not acceptable as given, or ``None`` when it is."""
    if not name:
        return "task_name must not be empty"
    if len(name) > MAX_TASK_NAME:
        return f"task_name must be at most {MAX_TASK_NAME} characters"
    if not _SAFE.fullmatch(name):
        return "task_name may only contain A-Z a-z 0-9 . _ - and must not start with '.'"
    return None
