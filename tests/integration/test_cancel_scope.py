"""A gateway's timed-out submit cancels only the session it created, never another
client's session that has the same id."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aip_link import messages as m
from session_service.link_servicer import GatewayLinkServicer
from tests.conftest import StackFactory
from tests.integration.exchange_support import assert_ack, assert_command, assert_task_end
from tests.stack import GatewayProcess, cmd, plan, register_device, results_for, task_frame


def _hold_answers_to(monkeypatch: pytest.MonkeyPatch, requester_id: str,
                     delay: float | None) -> None:
    """The replica answers ``requester_id``'s submits late (``delay`` s) or never."""
    answer = GatewayLinkServicer._answer

    def held(self: GatewayLinkServicer, peer: Any, body: m.TaskSubmit, refusal: Any) -> None:
        if body.requester_id != requester_id:
            answer(self, peer, body, refusal)
        elif delay is not None:
            asyncio.get_running_loop().call_later(delay, answer, self, peer, body, refusal)

    monkeypatch.setattr(GatewayLinkServicer, "_answer", held)


async def test_a_timed_out_submit_leaves_another_clients_session_running(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = "shared@t-0000cafe"
    stack = await make_stack()
    # A second gateway: the first would refuse the id itself, the route being its own.
    other = GatewayProcess([stack.replica.address], submit_timeout=0.3)
    await other.start()
    try:
        await other.wait_linked(1)
        dev1 = await register_device(stack.ws_url, "dev1")
        dev2 = await register_device(other.ws_url, "dev2")
        await dev1.send(task_frame("dev1", plan([cmd("a")]), session_id=sid))
        assert_ack(await dev1.recv(), session_id=sid)
        command = await dev1.recv()
        assert_command(command, sid)

        # dev2 asks for the same id; the replica refuses it, but the refusal never
        # reaches the gateway, whose submit times out and cancels.
        _hold_answers_to(monkeypatch, "dev2", None)
        await dev2.send(task_frame("dev2", plan([cmd("b")]), session_id=sid))
        refused = await dev2.recv()
        assert refused["type"] == "error" and "accept" in refused["error"], refused
        await asyncio.sleep(0.3)  # the cancel's way to the replica

        session = stack.service.manager.sessions[sid]
        assert session.running and session.requester_id == "dev1"
        await dev1.send(results_for(command, "dev1"))
        assert_task_end(await dev1.recv_type("task_end"), sid)
        await dev1.close()
        await dev2.close()
    finally:
        await other.stop()


async def test_a_late_acceptance_cancels_only_that_submits_session(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = await make_stack(gateway={"submit_timeout": 0.3})
    dev1 = await register_device(stack.ws_url, "dev1")
    dev2 = await register_device(stack.ws_url, "dev2")
    await dev1.send(task_frame("dev1", plan([cmd("a")]), session_id="s-kept"))
    assert_ack(await dev1.recv(), session_id="s-kept")
    command = await dev1.recv()

    _hold_answers_to(monkeypatch, "dev2", 0.6)  # accepted after the submit timed out
    await dev2.send(task_frame("dev2", plan([cmd("b")]), session_id="s-late"))
    # The session starts meanwhile (its first command may come), but its requester
    # hears it was not accepted in time.
    refused = await dev2.recv_type("error")
    assert "accept" in refused["error"], refused
    await asyncio.sleep(0.8)

    sessions = stack.service.manager.sessions
    assert not sessions["s-late"].running
    assert sessions["s-late"].cancel_reason == "submit_timeout"
    assert sessions["s-kept"].running
    await dev1.send(results_for(command, "dev1"))
    assert_task_end(await dev1.recv_type("task_end"), "s-kept")
    await dev1.close()
    await dev2.close()
