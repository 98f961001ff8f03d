"""How a link that breaks, or never comes up, is reported.

A peer that breaks the fragment protocol has its stream closed with a warning that says
why; a replica that cannot be reached is warned about at the first failed attempt of the
outage, not once per retry (nor only at debug level).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from aip_grpc import link_pb2, link_pb2_grpc
from aip_link.channel import CHANNEL_OPTIONS
from tests.conftest import StackFactory
from tests.processes import free_port
from tests.stack import HOST, GatewayProcess, wait_for


def warnings(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == logger and record.levelno >= logging.WARNING
            and text in record.getMessage()]


async def test_an_oversized_fragment_stream_closes_that_link_only(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING)
    stack = await make_stack()
    # Streams opened from now on reassemble at most 1 KiB; the stack's own link is older.
    monkeypatch.setattr("session_service.link_servicer.MAX_MESSAGE_BYTES", 1024)
    async with grpc.aio.insecure_channel(stack.replica.address,
                                         options=CHANNEL_OPTIONS) as channel:
        call = link_pb2_grpc.GatewayLinkStub(channel).Connect()
        await call.write(link_pb2.GatewayBatch(messages=[
            link_pb2.GatewayMessage(hello=link_pb2.Hello(gateway_id="gw-raw"))]))
        async with asyncio.timeout(5):
            welcome = await call.read()
        assert welcome.messages[0].WhichOneof("body") == "welcome"
        for _ in range(2):
            await call.write(link_pb2.GatewayBatch(messages=[link_pb2.GatewayMessage(
                fragment=link_pb2.Fragment(piece=b"x" * 800, last=False))]))
        async with asyncio.timeout(5):
            assert await call.read() is grpc.aio.EOF
    await wait_for(lambda: "gw-raw" not in stack.service.hub.peers)
    (broken,) = warnings(caplog, "aip.session.link", "broke the link protocol")
    assert "gw-raw" in broken and "exceeds 1024 bytes" in broken
    assert warnings(caplog, "aip.session.link", "protocol error: a fragmented")
    # The gateway's own link never noticed.
    assert stack.gateway.healthy_links() and not stack.gateway.links[0].last_error


async def test_an_unreachable_replica_is_warned_about_once_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aip.gateway.link")
    gw = GatewayProcess([f"{HOST}:{free_port()}"], link_backoff_min=0.02,
                        link_backoff_max=0.05)
    await gw.start()
    try:
        await wait_for(lambda: len([r for r in caplog.records
                                    if "not established" in r.getMessage()]) >= 10,
                       timeout=10, what="ten failed attempts")
    finally:
        await gw.stop()
    (warned,) = warnings(caplog, "aip.gateway.link", "not established")
    assert "1 failed attempt(s)" in warned and "UNAVAILABLE" in warned
