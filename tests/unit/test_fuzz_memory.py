"""The handler core under a long stream of malformed frames: memory does not grow.

:meth:`FrameRouter.handle` of a real :class:`Gateway` (never started, no replica
reachable) gets tens of thousands of random bad frames from two registered fake
connections: random JSON, frame-like objects with wrong types, huge strings, deep
nesting, invalid UTF-8, random bytes. Every frame must be answered or ignored without an
exception, the connections must stay open, nothing may be left in the registry, the
routes, the pending submits or the connections' tasks, and the memory traced after a
warm-up must not grow with the number of frames.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
import string
import tracemalloc
from typing import Any

import orjson

from aip_wire.frames import parse_client_frame
from aip_wire.vocab import CLIENT_MESSAGE_TYPES
from gateway_service.gateway import Gateway
from gateway_service.handlers import FrameRouter
from gateway_service.registry import Connection
from gateway_service.rules import Registration
from gateway_service.settings import GatewaySettings

SEED = 20260101
WARM_UP = 5_000
MEASURED = 20_000
#: Bytes of traced memory the measured frames may leave behind.
GROWTH_LIMIT = 1_000_000
#: Frames handled between two turns of the event loop (well under max_pending_sends).
BATCH = 50

SERVER_TYPES = {"heartbeat", "task", "command", "task_end", "error", "device_info_request",
                "device_info_response"}
CLIENT_TYPES = sorted(CLIENT_MESSAGE_TYPES)
ALPHABET = string.printable + "éü漢字\u0000\u2028\U0001f600"
FIELDS = ["type", "status", "client_type", "client_id", "session_id", "task_name",
          "target_id", "request", "action_results", "timestamp", "request_id",
          "prev_response_id", "error", "metadata"]


# ------------------------------------------------------------------------ generator


class BadFrames:
    """A seeded generator of malformed or hostile client messages."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self, limit: int = 20) -> str:
        rng = self.rng
        return "".join(rng.choices(ALPHABET, k=rng.randint(0, limit)))

    def scalar(self) -> Any:
        rng = self.rng
        return rng.choice([
            None, True, False, rng.randint(-(2**70), 2**70), rng.randint(-5, 5),
            rng.uniform(-1e300, 1e300), self.text(),
        ])

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth > 3 or roll < 0.5:
            return self.scalar()
        if roll < 0.75:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.text(8): self.value(depth + 1) for _ in range(rng.randint(0, 4))}

    def random_case(self, word: str) -> str:
        return "".join(c.upper() if self.rng.random() < 0.5 else c for c in word)

    def frame_like(self) -> dict[str, Any]:
        """A frame of a real type with some fields of the wrong type or odd values."""
        rng = self.rng
        frame: dict[str, Any] = {"type": self.random_case(rng.choice(CLIENT_TYPES))}
        for name in rng.sample(FIELDS[1:], rng.randint(0, len(FIELDS) - 1)):
            frame[name] = self.value() if rng.random() < 0.4 else self.text(12)
        if rng.random() < 0.3:
            frame["client_id"] = rng.choice(["dev1", "c1", "someone-else", ""])
        if rng.random() < 0.2:
            frame["session_id"] = f"s-{rng.randint(0, 10**9)}"  # never the same twice
        if rng.random() < 0.1:
            frame[self.text(6)] = self.value()
        return frame

    def huge_string(self) -> str:
        size = self.rng.randint(100_000, 400_000)
        field = self.rng.choice(["request", "client_id", "error", "task_name", "session_id",
                                 "type", "metadata"])
        if field == "metadata":
            return json.dumps({"type": "device_info_response",
                               "metadata": {"system_info": {"blob": "x" * size}}})
        return json.dumps({"type": "task", field: "é" * size}, ensure_ascii=False)

    def deep(self) -> str:
        depth = self.rng.randint(500, 20_000)
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        inner = opener * depth + ("1" if opener != "[" else "") + closer * depth
        return self.rng.choice([inner, '{"type":"task","request":' + inner + "}",
                                '{"type":"error","error":' + inner + "}"])

    def invalid_utf8(self) -> bytes:
        rng = self.rng
        bad = rng.choice([b"\xff", b"\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80",
                          b"\x80", b"\xe2\x82"])
        good = json.dumps(self.frame_like()).encode()
        cut = rng.randint(0, len(good))
        return good[:cut] + bad + good[cut:]

    def next(self) -> str | bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.30:
            return json.dumps(self.frame_like(), ensure_ascii=rng.random() < 0.5)
        if roll < 0.45:
            return json.dumps(self.value())
        if roll < 0.55:
            data = json.dumps(self.frame_like()).encode()
            return data if rng.random() < 0.5 else data[: rng.randint(0, len(data))]
        if roll < 0.65:
            return self.invalid_utf8()
        if roll < 0.72:
            return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        if roll < 0.80:
            return self.text(80)
        if roll < 0.84:
            return rng.choice(["", "{", "}", "null", "[]", "[1]", '"task"', "NaN", "1e999",
                               "{}", '{"type":null}', '{"type":5}', '{"type":"LAUNCH"}'])
        if roll < 0.92:
            # Well-formed frames with odd values, which reach the handlers.
            return json.dumps({**self.frame_like(), "type": rng.choice(CLIENT_TYPES)})
        if roll < 0.96:
            return self.deep()
        if roll < 0.99:
            return self.huge_string() if rng.random() < 0.25 else self.text(2_000)
        return json.dumps({"type": "heartbeat"})


# ------------------------------------------------------------------------ harness


class CountingSink:
    """A fake socket writer: checks and counts what would be sent, keeps nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.types: dict[str, int] = {}
        self.internal_errors: list[str] = []
        self.bad: list[str] = []

    async def __call__(self, text: str) -> None:
        self.count += 1
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.bad.append(text[:200])
            return
        kind = frame.get("type")
        if kind not in SERVER_TYPES or frame.get("status") not in {
            "continue", "completed", "failed", "ok", "error"
        }:
            if len(self.bad) < 5:
                self.bad.append(text[:200])
            return
        self.types[kind] = self.types.get(kind, 0) + 1
        error = frame.get("error") or ""
        if kind == "error" and error.startswith("Error handling message") and len(
            self.internal_errors
        ) < 5:
            self.internal_errors.append(error[:300])


class CountingHandler(logging.Handler):
    """Counts log records (keeps only a few) so nothing piles up in pytest's capture."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_level: dict[str, int] = {}
        self.exceptions: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.by_level[record.levelname] = self.by_level.get(record.levelname, 0) + 1
        if (record.exc_info or record.levelno >= logging.ERROR) and len(self.exceptions) < 5:
            self.exceptions.append(record.getMessage()[:300])


class Harness:
    def __init__(self) -> None:
        self.gateway = Gateway(GatewaySettings(session_service="127.0.0.1:1",
                                               gateway_id="gw-mem"))
        self.router = FrameRouter(self.gateway)
        self.closes: list[tuple[int, str]] = []
        self.dev_sink = CountingSink()
        self.con_sink = CountingSink()
        self.dev = self.gateway.register(
            Registration("dev1", "device", "linux", None, {"os": "Linux"}), self.dev_sink,
            self._close,
        )
        self.con = self.gateway.register(
            Registration("c1", "constellation", "windows", "dev1", {}), self.con_sink,
            self._close,
        )
        self.handled = 0

    def _close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    @property
    def connections(self) -> list[Connection]:
        return [self.dev, self.con]

    async def settle(self) -> None:
        """Let handler tasks finish and outboxes flush into the sinks."""
        for _ in range(3):
            await asyncio.sleep(0)
        for conn in self.connections:
            if conn.tasks:
                async with asyncio.timeout(5):
                    await asyncio.gather(*list(conn.tasks))
        for conn in self.connections:
            await conn.outbox.drain(5)
        for _ in range(3):
            await asyncio.sleep(0)

    async def feed(self, generator: BadFrames, count: int) -> None:
        for n in range(count):
            conn = self.con if n % 2 else self.dev
            self.router.handle(conn, generator.next())
            self.handled += 1
            if n % BATCH == BATCH - 1:
                await self.settle()
                self.check()
        await self.settle()
        self.check()

    def check(self) -> None:
        gateway = self.gateway
        assert self.closes == [], self.closes  # a bad frame never closes the connection
        assert [c.client_id for c in gateway.registry] == ["dev1", "c1"]
        assert gateway.registry.get("dev1") is self.dev
        assert gateway.registry.get("c1") is self.con
        assert gateway.routes == {}
        assert not gateway.sessions.pending
        for conn in self.connections:
            assert not conn.outbox.closed, conn.client_id
            assert len(conn.outbox) == 0, conn.client_id
            assert conn.tasks == set(), conn.client_id
            assert conn.sessions == set(), conn.client_id

    def reset_retained_state(self) -> None:
        """Bounded state a frame legitimately replaces (the last device info pushed)."""
        self.dev.device_info = {"os": "Linux"}


def fill_parser_caches(seed: int) -> None:
    """Saturate the bounded caches of the JSON parser before measuring.

    pydantic-core keeps a fixed-size cache of short strings it parsed (16,384 slots);
    filling it during the warm-up keeps a cache that only fills up from being counted as
    growth.
    """
    rng = random.Random(seed)
    for n in range(800):
        keys = {f"k{n}-{j}-{rng.getrandbits(32):x}": f"v{rng.getrandbits(48):x}"
                for j in range(100)}
        parse_client_frame(json.dumps({"type": "heartbeat", "metadata": keys}))


def traced_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> tuple[int, str]:
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<unknown>")]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    growth = sum(stat.size_diff for stat in stats)
    top = "\n".join(str(stat) for stat in stats[:15])
    return growth, top


async def test_memory_does_not_grow_under_malformed_frames() -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[Any] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    aip_logger = logging.getLogger("aip")
    counter = CountingHandler()
    saved = (aip_logger.propagate, aip_logger.level)
    aip_logger.addHandler(counter)
    aip_logger.propagate = False  # pytest's log capture would keep every record
    aip_logger.setLevel(logging.DEBUG)
    harness = Harness()
    generator = BadFrames(SEED)
    tracemalloc.start(1)
    try:
        fill_parser_caches(SEED)
        await harness.feed(generator, WARM_UP)
        harness.reset_retained_state()
        gc.collect()
        before = tracemalloc.take_snapshot()
        await harness.feed(generator, MEASURED)
        harness.reset_retained_state()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        aip_logger.removeHandler(counter)
        aip_logger.propagate, _ = saved
        aip_logger.setLevel(saved[1])
        loop.set_exception_handler(previous_handler)

    growth, top = traced_growth(before, after)
    assert growth < GROWTH_LIMIT, f"memory grew by {growth} bytes over {MEASURED} frames:\n{top}"

    assert loop_errors == []
    # No frame made a handler raise (it would be answered "Error handling message: ...").
    for sink in (harness.dev_sink, harness.con_sink):
        assert sink.internal_errors == [], sink.internal_errors
        assert sink.bad == [], sink.bad
    assert counter.exceptions == [], counter.exceptions
    # Every frame got an answer or was ignored; most malformed ones got an error frame.
    answered = harness.dev_sink.count + harness.con_sink.count
    assert 0 < answered <= harness.handled
    errors = harness.dev_sink.types.get("error", 0) + harness.con_sink.types.get("error", 0)
    assert errors > harness.handled // 2, (harness.dev_sink.types, harness.con_sink.types)
    harness.check()


async def test_connection_still_answers_after_the_storm() -> None:
    """After thousands of bad frames, the same connections still work normally."""
    aip_logger = logging.getLogger("aip")
    saved = aip_logger.propagate
    aip_logger.propagate = False
    try:
        harness = Harness()
        await harness.feed(BadFrames(SEED + 1), 3_000)
        before = harness.dev_sink.types.get("heartbeat", 0)
        harness.router.handle(harness.dev, '{"type":"heartbeat","status":"ok"}')
        await harness.settle()
        assert harness.dev_sink.types.get("heartbeat", 0) == before + 1
        info_before = harness.con_sink.types.get("device_info_response", 0)
        harness.router.handle(
            harness.con,
            '{"type":"device_info_request","client_type":"constellation","client_id":"c1",'
            '"target_id":"dev1","request_id":"q1"}',
        )
        await harness.settle()
        assert harness.con_sink.types.get("device_info_response", 0) == info_before + 1
        harness.check()
    finally:
        aip_logger.propagate = saved
