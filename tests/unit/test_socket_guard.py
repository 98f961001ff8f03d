"""gateway_service.socket_guard: the gateway-wide socket counts and their limits."""

from __future__ import annotations

import logging

import pytest

from aip_runtime.throttled_log import Throttled
from gateway_service.settings import GatewaySettings
from gateway_service.socket_guard import (
    SocketGuard,
    SocketLimits,
    cap_for_fd_limit,
    guard_of,
)
from tests.stack import HOST


def test_admit_up_to_the_cap_then_refuse() -> None:
    guard = SocketGuard(SocketLimits(max_unregistered=2))
    assert guard.admit() and guard.admit()
    assert guard.admit() is False
    assert guard.unregistered == 2  # a refusal takes nothing
    guard.release()
    assert guard.admit() and guard.unregistered == 2


def test_partial_bytes_stay_within_the_budget() -> None:
    guard = SocketGuard(SocketLimits(partial_frames_budget=100))
    assert guard.resize_partial(0, 60)
    assert guard.resize_partial(0, 40)
    assert guard.partial_bytes == 100
    assert guard.resize_partial(40, 41) is False  # one byte too many: nothing recorded
    assert guard.partial_bytes == 100
    assert guard.resize_partial(60, 10)  # shrinking always goes through
    assert guard.resize_partial(40, 0) and guard.resize_partial(10, 0)
    assert guard.partial_bytes == 0


def test_limits_from_settings() -> None:
    settings = GatewaySettings(handshake_timeout=3, max_unregistered=7,
                               ws_max_size=4096, ws_max_size_unregistered=1 << 20,
                               partial_frames_budget=5000)
    limits = SocketLimits.from_settings(settings)
    assert limits.handshake_timeout == 3 and limits.max_unregistered == 7
    assert limits.partial_frames_budget == 5000
    # A registered client is never held to less than an unregistered one.
    assert limits.max_size == 4096 and limits.max_size_unregistered == 4096


def test_defaults_hold_two_frames_of_the_largest_size_queued() -> None:
    settings = GatewaySettings()
    assert settings.ws_max_size == 100 << 20
    assert settings.max_pending_bytes >= 2 * settings.ws_max_size
    assert settings.partial_frames_budget >= 10 * settings.ws_max_size


def test_a_config_from_elsewhere_gets_a_guard_with_its_size_limit() -> None:
    import uvicorn

    config = uvicorn.Config(app=None, host=HOST, ws_max_size=10_000)  # type: ignore[arg-type]
    guard = guard_of(config)
    assert guard is guard_of(config)  # one per server
    assert guard.limits.max_size == 10_000
    assert guard.limits.max_size_unregistered == 10_000


def test_throttled_logs_once_per_interval_with_a_count(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("aip_runtime.throttled_log.time.monotonic", lambda: now[0])
    throttled = Throttled(logging.getLogger("t"), logging.WARNING, "refused %s", interval=10)
    with caplog.at_level(logging.WARNING, logger="t"):
        for n in range(5):
            throttled.note(n)
        now[0] += 10
        throttled.note("late")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0 (1 time(s) in 10s)", "refused late (5 time(s) in 10s)"]


def test_the_cap_leaves_half_the_descriptors_to_everyone_else() -> None:
    assert cap_for_fd_limit(10_000, 1 << 20) == 10_000
    assert cap_for_fd_limit(10_000, 1024) == 512
    assert cap_for_fd_limit(10_000, None) == 10_000  # no such limit on this platform
    assert cap_for_fd_limit(10_000, 1) == 1
