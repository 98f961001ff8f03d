"""The ids bound in context reach each log line, in both formats, and only where bound."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from aip_runtime import log_context
from aip_runtime.cli import LogFormat
from aip_runtime.log_setup import configure_logging, formatter


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(log_context.ContextFilter())
    log = logging.getLogger("test.log_context")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield log, out
    finally:
        log.removeHandler(handler)


def use(log: logging.Logger, log_format: LogFormat) -> None:
    log.handlers[0].setFormatter(formatter(log_format, "gateway", {"gateway_id": "g1"}))


def test_text_lines_end_with_the_bound_ids_escaped(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    use(log, LogFormat.TEXT)
    log.info("before")
    with log_context.bound(client_id="evil\n2026-01-01 CRITICAL forged", device_id=None):
        log.info("during")
        with log_context.bound(session_id="s-1", device_id="d-1"):
            log.info("nested")
    log.info("after")
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith("test.log_context: before")
    assert lines[1].endswith("during [client_id=evil\\x0a2026-01-01 CRITICAL forged]")
    assert lines[2].endswith(
        "nested [session_id=s-1 client_id=evil\\x0a2026-01-01 CRITICAL forged device_id=d-1]"
    )
    assert lines[3].endswith("test.log_context: after")


def test_json_lines_carry_fixed_and_bound_fields(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    use(log, LogFormat.JSON)
    with log_context.bound(session_id="s-1", client_id="c" * 500):
        log.warning("about %s", "it", extra={"device_id": "given-here"})
    log.info("none")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert list(first)[:4] == ["timestamp", "level", "logger", "message"]
    assert first["level"] == "WARNING" and first["message"] == "about it"
    assert first["service"] == "gateway" and first["gateway_id"] == "g1"
    assert first["session_id"] == "s-1" and first["device_id"] == "given-here"
    assert first["client_id"] == "c" * 200 + "...[300 more chars]"
    assert "log_context" not in first
    assert not {"session_id", "client_id", "device_id"} & second.keys()


async def test_a_task_keeps_what_was_bound_when_it_was_created() -> None:
    seen: list[dict[str, str]] = []

    async def later() -> None:
        await asyncio.sleep(0)
        seen.append(log_context.current())

    with log_context.bound(session_id="s-1"):
        task = asyncio.get_running_loop().create_task(later())
    assert log_context.current() == {}
    await task
    assert seen == [{"session_id": "s-1"}]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(TypeError):
        log_context.bind(request_id="r")


@pytest.fixture
def root_restored() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_configuring_again_replaces_the_handler_and_json_adopts_loggers(
    root_restored: logging.Logger,
) -> None:
    own = logging.getLogger("test.log_context.own")
    silenced = logging.getLogger("test.log_context.silenced")
    own.addHandler(logging.NullHandler())
    own.propagate = silenced.propagate = False
    try:
        configure_logging("info", LogFormat.TEXT, service="session", adopt=[own.name])
        assert own.handlers and own.propagate is False  # text: left to its own format
        first = configure_logging(
            "warning", LogFormat.JSON, service="session", adopt=[own.name, silenced.name]
        )
        ours = [h for h in root_restored.handlers if getattr(h, "_aip_log_handler", False)]
        assert ours == [first]
        assert json.loads(first.format(logging.makeLogRecord({"msg": "m"})))["message"] == "m"
        assert root_restored.level == logging.WARNING
        assert not own.handlers and own.propagate is True
        assert silenced.propagate is False  # no handler of its own: it was silenced
    finally:
        own.handlers.clear()
        own.propagate = silenced.propagate = True
