"""Two connections with one ``client_id``: the live holder keeps it.

Through a real gateway (uvicorn) and replica: a newcomer takes the id only when the holder
does not answer a WebSocket ping within ``--takeover-probe-timeout``, or when it presents
a valid token for the id; otherwise it is refused with an error frame and 4409.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from gateway_service.auth import hash_token
from tests.conftest import StackFactory
from tests.stack import Client, Stack, register_device, register_frame, wait_for
from tests.tcp_proxy import TcpProxy

#: How long a twin waits before reconnecting once closed or refused (the reference
#: client waits 2 s; compressed here).
RECONNECT_DELAY = 0.5


async def takeovers(stack: Stack) -> dict[tuple[str, str], float]:
    """``aip_gateway_takeovers_total`` by (outcome, reason), read from ``/metrics``."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{stack.http_url}/metrics")).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "aip_gateway_takeovers":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = (sample.labels["outcome"], sample.labels["reason"])
                    counts[key] = sample.value
    return counts


def delta(
    after: dict[tuple[str, str], float],
    before: dict[tuple[str, str], float],
    outcome: str,
    reason: str,
) -> float:
    return after.get((outcome, reason), 0.0) - before.get((outcome, reason), 0.0)


@dataclass
class Twin:
    """A device that reconnects shortly after every close or refusal, like the reference
    client, counting what happened to it."""

    url: str
    client_id: str
    registered: int = 0
    refused: list[tuple[str, int]] = field(default_factory=list)
    closed_after_registering: list[int | None] = field(default_factory=list)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                client = await Client.connect(self.url)
            except OSError:
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            try:
                await client.send(register_frame(self.client_id))
                first = await client.recv(10)
                if first["type"] == "error":
                    with pytest.raises(ConnectionClosed) as closed:
                        async with asyncio.timeout(5):
                            await client.ws.recv()
                    code = closed.value.rcvd.code if closed.value.rcvd else 1006
                    self.refused.append((first["error"], code))
                else:
                    self.registered += 1
                    self.confirmed.set()
                    try:
                        while True:
                            await client.ws.recv()
                    except ConnectionClosed as exc:
                        self.closed_after_registering.append(exc.rcvd.code if exc.rcvd else None)
            except (ConnectionClosed, TimeoutError):
                self.refused.append(("dropped", 1006))
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await client.close()
            await asyncio.sleep(RECONNECT_DELAY)


async def test_twins_do_not_flap_and_a_frozen_holder_loses_the_id(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(gateway={"takeover_probe_timeout": 1.0})
    before = await takeovers(stack)
    proxy = await TcpProxy("127.0.0.1", stack.gw.port).start()
    first = Twin(f"ws://{proxy.address}/ws", "twin")
    second = Twin(stack.ws_url, "twin")
    tasks = [asyncio.get_running_loop().create_task(first.run())]
    try:
        async with asyncio.timeout(5):
            await first.confirmed.wait()
        holder = stack.gateway.registry.get("twin")
        tasks.append(asyncio.get_running_loop().create_task(second.run()))
        await asyncio.sleep(8)

        # The first holder kept the id all along; the second was refused, again and again.
        assert first.registered == 1 and first.closed_after_registering == []
        assert second.registered == 0
        assert len(second.refused) >= 5, second.refused
        for error, code in second.refused:
            assert code == 4409, (error, code)
            assert "another live connection holds client_id 'twin'" in error
        assert stack.gateway.registry.get("twin") is holder
        mid = await takeovers(stack)
        assert delta(mid, before, "took_over", "probe_failed") == 0
        assert delta(mid, before, "took_over", "token") == 0
        assert delta(mid, before, "refused", "holder_alive") == len(second.refused)

        # The first holder's network goes: its socket stays open, nothing crosses it. The
        # second gets the id on its next attempt, once the probe times out.
        proxy.freeze()
        await wait_for(lambda: second.registered == 1, 5)
        assert stack.gateway.registry.get("twin") is not holder
        after = await takeovers(stack)
        assert delta(after, mid, "took_over", "probe_failed") == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        proxy.thaw()
        await proxy.stop()


async def test_a_valid_token_takes_over_at_once(make_stack: StackFactory, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"dev1 device {hash_token('dev-secret')}\n")
    # A probe this long would show: the token does not wait for it.
    stack = await make_stack(gateway={"tokens_file": tokens_file, "takeover_probe_timeout": 30.0})
    before = await takeovers(stack)
    first = await register_device(stack.ws_url + "?token=dev-secret", "dev1")
    async with asyncio.timeout(5):
        second = await register_device(stack.ws_url + "?token=dev-secret", "dev1")
    with pytest.raises(ConnectionClosed) as closed:
        await first.recv(3)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    after = await takeovers(stack)
    assert delta(after, before, "took_over", "token") == 1
    await second.send({"type": "heartbeat", "client_id": "dev1"})
    assert (await second.recv())["type"] == "heartbeat"
    await second.close()


async def test_a_holder_that_closed_is_no_obstacle(stack: Stack) -> None:
    first = await register_device(stack.ws_url, "dev1")
    await first.close()
    await wait_for(lambda: stack.gateway.registry.get("dev1") is None)
    second = await register_device(stack.ws_url, "dev1")
    await second.close()


async def test_twins_sharing_a_token_change_hands_at_most_once(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    """Two clones with one id and one token: the token takes the id over once, then the
    window makes every further newcomer face the probe, which the live holder answers."""
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"twin device {hash_token('twin-secret')}\n")
    stack = await make_stack(gateway={"tokens_file": tokens_file,
                                      "takeover_probe_timeout": 1.0})
    before = await takeovers(stack)
    url = stack.ws_url + "?token=twin-secret"
    first, second = Twin(url, "twin"), Twin(url, "twin")
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(first.run())]
    try:
        async with asyncio.timeout(5):
            await first.confirmed.wait()
        tasks.append(loop.create_task(second.run()))
        await asyncio.sleep(8)
        after = await takeovers(stack)
        changes = sum(delta(after, before, "took_over", reason)
                      for reason in ("token", "probe_failed"))
        assert changes <= 1, after
        assert first.registered + second.registered <= 2
        refusals = first.refused + second.refused
        assert len(refusals) >= 4, refusals
        assert all(code == 4409 for _, code in refusals), refusals
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
