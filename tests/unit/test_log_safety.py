"""Redaction, escaping and truncation of what reaches logs and error frames."""

from __future__ import annotations

import logging

from gateway_service.log_safety import SafeLogFilter, clip, escape_controls, redact


def test_tokens_in_urls_and_headers_are_redacted() -> None:
    line = '127.0.0.1:5 - "WebSocket /ws?token=s3cr3t-T0k&v=1" [accepted]'
    assert redact(line) == '127.0.0.1:5 - "WebSocket /ws?token=[redacted]&v=1" [accepted]'
    assert "s3cr3t" not in redact("ws://h/ws?a=1&auth_token=s3cr3t")
    assert redact("Authorization: Bearer s3cr3t") == "Authorization: Bearer [redacted]"
    assert redact("nothing to hide") == "nothing to hide"


def test_control_characters_are_escaped() -> None:
    assert escape_controls("a\nb\rc\td\x00e\x1b") == "a\\nb\\rc\\td\\x00e\\x1b"
    assert escape_controls("line\u2028sep") == "line\\u2028sep"


def test_clip_cuts_with_a_marker() -> None:
    assert clip("short") == "short"
    assert clip("x" * 250) == "x" * 200 + "...[50 more chars]"
    assert clip("x" * 10, limit=4) == "xxxx...[6 more chars]"
    assert clip(ValueError("bad\nvalue")) == "bad\\nvalue"


def test_the_filter_rewrites_the_message() -> None:
    record = logging.LogRecord(
        "t",
        logging.INFO,
        __file__,
        1,
        "%s said %s",
        ("dev\n2026-01-01 CRITICAL forged", "/ws?token=abc"),
        None,
    )
    assert SafeLogFilter().filter(record)
    message = record.getMessage()
    assert "\n" not in message and "abc" not in message
    assert message == "dev\\n2026-01-01 CRITICAL forged said /ws?token=[redacted]"
