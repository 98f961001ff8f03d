"""The ``fleet`` load-generator mode: a whole fleet of idle, heartbeating devices.

``devices`` devices register with ``concurrency`` in flight, their connections spread
over ``source_hosts`` (one loopback source address has about 28,000 ephemeral ports
towards one server port). Then, each phase announced to the orchestrator as a ``stage``
so that it can read the gateway's memory and CPU time in between:

``registered``
    every device is registered; the registration rate is reported.
``idle``
    ``idle_s`` seconds of nothing but the gateway's own keep-alive work.
``heartbeats``
    every device sends one heartbeat, paced evenly over ``sweep_s`` (the reference
    cadence of one per 120 s, compressed in time), and every ack is awaited.
``round_trips``
    with heartbeats going on at the reference cadence, ``sessions`` sessions of ``steps``
    commands each are started through the public gRPC API on devices chosen at random;
    the time between consecutive commands at the device is one command round trip.

Devices need no task each: every connection hands its messages to a callback.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import grpc
import orjson

from bench.common import emit, latency_summary
from bench.frames import heartbeat_frame, plan_request, results_frame
from bench.harness import bounded, close_all, now, register, stdin_reader
from bench.wsclient import WsClient

#: The heartbeat interval of the reference device client, seconds.
REFERENCE_CADENCE = 120.0


class Fleet:
    """The device side: answers commands, counts heartbeat acks and session ends."""

    def __init__(self, sockets: list[WsClient], ids: list[str]) -> None:
        self.sockets = sockets
        self.ids = ids
        self.sent_at: dict[int, float] = {}
        self.ack_latencies: list[float] = []
        self.acks = 0
        self.errors: list[str] = []
        self.watched: int | None = None
        self.stamps: list[float] = []
        self.ended: dict[str, asyncio.Future[str]] = {}
        for index, ws in enumerate(sockets):
            ws.on_message = self._handler(index)

    def _handler(self, index: int) -> Any:
        def on_message(raw: bytes) -> None:
            frame = orjson.loads(raw)
            kind = frame.get("type")
            if kind == "heartbeat":
                self.acks += 1
                sent = self.sent_at.pop(index, None)
                if sent is not None:
                    self.ack_latencies.append(now() - sent)
            elif kind == "command":
                if index == self.watched:
                    self.stamps.append(now())
                self.sockets[index].write_now(results_frame(frame, self.ids[index]))
            elif kind == "task_end":
                waiter = self.ended.get(str(frame.get("session_id")))
                if waiter is not None and not waiter.done():
                    waiter.set_result(str(frame.get("status")))
            elif kind == "error":
                self.errors.append(f"{self.ids[index]}: {frame.get('error')}"[:200])

        return on_message

    def heartbeat(self, index: int, timed: bool) -> None:
        if timed:
            self.sent_at[index] = now()
        self.sockets[index].write_now(heartbeat_frame(self.ids[index]))

    async def paced_heartbeats(self, indexes: list[int], seconds: float, timed: bool) -> None:
        """One heartbeat from each of ``indexes``, spread evenly over ``seconds``."""
        tick = 0.01
        per_tick = max(1, round(len(indexes) * tick / seconds)) if seconds > 0 else len(indexes)
        started = now()
        for n, first in enumerate(range(0, len(indexes), per_tick)):
            for index in indexes[first:first + per_tick]:
                self.heartbeat(index, timed)
            delay = started + (n + 1) * tick - now()
            if delay > 0:
                await asyncio.sleep(delay)


async def fleet(cfg: dict[str, Any]) -> dict[str, Any]:
    from aip_grpc import session_api_pb2, session_api_pb2_grpc
    from aip_link.channel import CHANNEL_OPTIONS

    url, count = cfg["url"], int(cfg["devices"])
    sources: list[str] = list(cfg.get("source_hosts") or ["127.0.0.1"])
    ids = [f"bench-fleet-{i}" for i in range(count)]
    reader = await stdin_reader()
    errors: list[str] = []

    async def one(index: int) -> WsClient | None:
        try:
            return await register(url, ids[index], local_host=sources[index % len(sources)])
        except Exception as exc:
            errors.append(f"{ids[index]}: {exc!r}"[:200])
            return None

    async def stage(name: str, **fields: Any) -> None:
        emit("stage", stage=name, **fields)
        async with asyncio.timeout(600):
            await reader.readline()

    emit("ready")
    started = now()
    opened = await bounded(count, int(cfg.get("concurrency", 200)), one)
    registration_s = now() - started
    sockets = [ws for ws in opened if ws is not None]
    live_ids = [ids[i] for i, ws in enumerate(opened) if ws is not None]
    devices = Fleet(sockets, live_ids)
    result: dict[str, Any] = {
        "devices": len(sockets), "registration_s": registration_s,
        "registration_rate": count / registration_s, "sources": len(sources)}
    channel = grpc.aio.insecure_channel(cfg["session_addresses"][0], options=CHANNEL_OPTIONS)
    try:
        await stage("registered", devices=len(sockets), rate=result["registration_rate"])
        await asyncio.sleep(float(cfg.get("idle_s", 25)))
        await stage("idle")

        everyone = list(range(len(sockets)))
        random.shuffle(everyone)
        sweep_s = float(cfg.get("sweep_s", 10))
        acks_before = devices.acks
        sweep_started = now()
        await devices.paced_heartbeats(everyone, sweep_s, timed=True)
        deadline = now() + 60
        while devices.acks - acks_before < len(everyone) and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        acks = devices.acks - acks_before
        result["heartbeats"] = {
            "sent": len(everyone), "acked": acks, "seconds": now() - sweep_started,
            "latency": latency_summary(devices.ack_latencies)}
        if acks < len(everyone):
            errors.append(f"{len(everyone) - acks} heartbeat(s) never acknowledged")
        await stage("heartbeats", acks=acks)

        # Heartbeats at the reference cadence go on while commands are timed.
        background = asyncio.create_task(devices.paced_heartbeats(
            everyone, REFERENCE_CADENCE, timed=False))
        stub = session_api_pb2_grpc.SessionApiStub(channel)
        steps = int(cfg.get("steps", 50))
        intervals: list[float] = []
        try:
            for n in range(int(cfg.get("sessions", 20))):
                index = random.randrange(len(sockets))
                session_id = f"fleet-{cfg.get('run_id', 'r')}-{n}"
                devices.watched, devices.stamps = index, []
                waiter = devices.ended[session_id] = asyncio.get_running_loop().create_future()
                await stub.StartSession(session_api_pb2.StartSessionRequest(
                    device_id=live_ids[index], request=plan_request(steps),
                    session_id=session_id, requester_id="bench", task_name="bench"),
                    timeout=30)
                async with asyncio.timeout(60):
                    status = await waiter
                if status != "completed":
                    errors.append(f"{session_id}: task_end {status}")
                intervals.extend(b - a for a, b in itertools.pairwise(devices.stamps[1:]))
        finally:
            background.cancel()
        result["round_trip"] = latency_summary(intervals)
        await stage("round_trips")
    finally:
        await channel.close()
        await close_all(sockets)
    errors.extend(devices.errors)
    result.update(errors=len(errors), error_samples=errors[:5])
    return result
