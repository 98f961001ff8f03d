"""What a strict reference client accepts from the server, shared by the tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

SERVER_TYPES = {
    "heartbeat", "task", "command", "task_end", "error",
    "device_info_request", "device_info_response",
}
STATUSES = {"continue", "completed", "failed", "ok", "error"}


def assert_iso_utc(value: Any) -> None:
    assert isinstance(value, str), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"timestamp without a UTC offset: {value!r}"


def assert_wire_frame(frame: dict[str, Any]) -> None:
    """Only values a strict reference client accepts."""
    assert frame["type"] in SERVER_TYPES, frame
    assert frame["status"] in STATUSES, frame
    if frame.get("timestamp") is not None:
        assert_iso_utc(frame["timestamp"])
