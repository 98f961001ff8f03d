"""The exception a tool raises to report a ``failure`` (kept apart so that every tool
module can raise it without importing the registry)."""

from __future__ import annotations

from typing import Any


class ToolFailure(Exception):
    """Raise from a tool to report ``failure`` with a message and, optionally, a result."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result
