from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session (see :mod:`tests.postgres`)."""
    from tests import postgres

    if postgres.binaries() is None:
        reason = "PostgreSQL binaries (initdb, pg_ctl) not found"
        if postgres.required():
            pytest.fail(f"{reason}, and AIP_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    with postgres.server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh database on the test session's PostgreSQL server."""
    from tests import postgres

    return postgres.new_database(postgres_server)
