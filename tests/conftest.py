from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.stack import Stack

StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """A session-service replica and a gateway linked to it, with default settings."""
    running = await Stack().start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    """Start stacks with custom settings: ``await make_stack(gateway={...}, session={...})``."""
    started: list[Stack] = []

    async def make(**kwargs: Any) -> Stack:
        running = await Stack(**kwargs).start()
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            await running.stop()
