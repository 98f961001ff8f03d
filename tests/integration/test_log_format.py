"""``--log-format``: real gateway and replica processes, a constellation driving a device
through one task; what each wrote to stderr, line by line."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from tests.processes import GatewayService, Replica
from tests.stack import (
    answer_commands,
    cmd,
    plan,
    register_constellation,
    register_device,
    task_frame,
    wait_for,
)

GATEWAY_ID = "gw-logs"
REPLICA_ID = "replica-logs"
DEVICE = "dev-logs"
CONSTELLATION = "con-logs"
SESSION = f"{CONSTELLATION}@t-logs"


async def run_one_task(log_format: str) -> tuple[list[str], list[str]]:
    """Gateway and replica at ``info`` in ``log_format``; one two-step task of a
    constellation on a device. Returns (gateway lines, replica lines) once both stopped."""
    flags = ["--log-level", "info", "--log-format", log_format]
    replica = Replica(extra=(*flags, "--replica-id", REPLICA_ID), capture=True)
    gateway = GatewayService(GATEWAY_ID, [replica], extra_args=flags)
    gateway.capture = True
    replica.start()
    gateway.start()
    try:
        await gateway.wait_replicas(1)
        device = await register_device(gateway.ws_url, DEVICE)
        constellation = await register_constellation(gateway.ws_url, CONSTELLATION, DEVICE)
        await constellation.send(
            task_frame(
                CONSTELLATION,
                plan([cmd("a")], [cmd("b")]),
                client_type="constellation",
                target_id=DEVICE,
                session_id=SESSION,
            )
        )
        await answer_commands(device, DEVICE, 2)
        end = await constellation.recv_type("task_end", 10)
        assert end["status"] == "completed", end
        await constellation.close()
        await device.close()
        await wait_for(
            lambda: any(
                f"{DEVICE} closed" in line or f"{DEVICE} disconnected" in line
                for line in gateway.log
            ),
            10,
            what="close logged",
        )
    finally:
        gateway.stop()
        replica.stop()
    return gateway.log, replica.log


#: What gRPC's C core may write to stderr itself, past Python's logging (absl's format).
NATIVE_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before absl)"
)


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as a JSON object (but gRPC core's own); fails on the first that is
    not one."""
    records = []
    for line in lines:
        if not line.strip() or NATIVE_LINE.match(line):
            continue
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    return records


def assert_common(
    records: list[dict[str, Any]], service: str, id_field: str, id_value: str
) -> None:
    assert records, f"{service} wrote nothing"
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= record.keys(), record
        moment = datetime.fromisoformat(record["timestamp"])
        assert moment.utcoffset() == UTC.utcoffset(None), record
        assert abs((datetime.now(UTC) - moment).total_seconds()) < 120, record
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, record
        assert record["service"] == service and record[id_field] == id_value, record


async def test_json_lines_carry_the_service_and_the_ids_bound() -> None:
    gateway_lines, replica_lines = await run_one_task("json")
    gateway, replica = parsed(gateway_lines), parsed(replica_lines)
    assert_common(gateway, "gateway", "gateway_id", GATEWAY_ID)
    assert_common(replica, "session", "replica_id", REPLICA_ID)
    assert not [r for r in gateway if "replica_id" in r]
    assert not [r for r in replica if "gateway_id" in r]

    # The gateway: a socket's lines name its client and the device it is about, from
    # its registration on; lines of no socket name none.
    registered = [r for r in gateway if "Registered constellation client" in r["message"]]
    assert len(registered) == 1, gateway
    assert registered[0]["client_id"] == CONSTELLATION
    assert registered[0]["device_id"] == DEVICE
    device_lines = [r for r in gateway if "Registered device client" in r["message"]]
    assert [(r["client_id"], r["device_id"]) for r in device_lines] == [(DEVICE, DEVICE)]
    requested = [r for r in gateway if f"(session {SESSION})" in r["message"]]
    assert [(r["client_id"], r["device_id"], r["session_id"]) for r in requested] == \
        [(CONSTELLATION, DEVICE, SESSION)]
    # uvicorn's lines are JSON too, and its access log stays off as in text.
    assert not [r for r in gateway if r["logger"] == "uvicorn.access"]
    found = [r for r in gateway if "replica found" in r["message"]]
    assert found and not {"client_id", "device_id", "session_id"} & found[0].keys()

    # The replica: the lines of the task's submission name the session, its requester
    # and its device; the line of the link from the gateway names none of them.
    started = [r for r in replica if SESSION in r["message"] and "started" in r["message"]]
    assert len(started) == 1, replica
    assert started[0]["session_id"] == SESSION
    assert started[0]["client_id"] == CONSTELLATION
    assert started[0]["device_id"] == DEVICE
    # Its end is logged from a store callback, not from the submission: it names the
    # session all the same.
    ended = [r for r in replica if r["message"] == f"session {SESSION} completed"]
    assert len(ended) == 1, replica
    assert (ended[0]["session_id"], ended[0]["device_id"]) == (SESSION, DEVICE)
    listening = [r for r in replica if "listening" in r["message"]]
    assert listening and "session_id" not in listening[0]


async def test_text_lines_end_with_the_ids_bound() -> None:
    gateway_lines, replica_lines = await run_one_task("text")
    for line in [*gateway_lines, *replica_lines]:
        assert not line.startswith("{"), line
    assert not [line for line in gateway_lines if '"GET /api/health' in line]
    registered = [line for line in gateway_lines if "Registered constellation client" in line]
    assert len(registered) == 1, gateway_lines
    assert registered[0].endswith(f" [client_id={CONSTELLATION} device_id={DEVICE}]")
    started = [line for line in replica_lines if SESSION in line and "started" in line]
    assert len(started) == 1, replica_lines
    assert started[0].endswith(
        f" [session_id={SESSION} client_id={CONSTELLATION} device_id={DEVICE}]"
    )
    listening = [line for line in replica_lines if "listening" in line]
    assert listening and not listening[0].endswith("]")
