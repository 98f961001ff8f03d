"""aip_wire.vocab: the one vocabulary, its wire values, and who may depend on it."""

from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest

from aip_wire.vocab import (
    CLIENT_MESSAGE_TYPES,
    SERVER_MESSAGE_TYPES,
    CancelReason,
    ClientType,
    CloseCode,
    MessageType,
    RequesterKind,
    end_audience,
)


def test_members_are_their_wire_values() -> None:
    assert MessageType.COMMAND_RESULTS == "command_results"
    assert json.dumps({"type": MessageType.TASK_END}) == '{"type": "task_end"}'
    assert orjson.dumps({"client_type": ClientType.CONSTELLATION}) == (
        b'{"client_type":"constellation"}'
    )
    assert f"{ClientType.DEVICE}" == "device"


def test_message_type_sets_follow_the_direction_of_each_frame() -> None:
    assert MessageType.COMMAND not in CLIENT_MESSAGE_TYPES
    assert {MessageType.REGISTER, MessageType.COMMAND_RESULTS}.isdisjoint(SERVER_MESSAGE_TYPES)
    assert CLIENT_MESSAGE_TYPES | SERVER_MESSAGE_TYPES == frozenset(MessageType)


def test_close_codes() -> None:
    assert [int(code) for code in (
        CloseCode.SERVICE_RESTART, CloseCode.REPLACED, CloseCode.BAD_REGISTRATION,
        CloseCode.UNAUTHORIZED, CloseCode.TARGET_NOT_CONNECTED,
        CloseCode.REGISTRATION_TIMEOUT, CloseCode.SILENT, CloseCode.DUPLICATE,
        CloseCode.TOO_SLOW,
    )] == [1012, 4000, 4400, 4401, 4404, 4408, 4408, 4409, 4429]


@pytest.mark.parametrize(("kind", "reason", "expected"), [
    (RequesterKind.DEVICE, None, (True, False)),
    (RequesterKind.CONSTELLATION, None, (True, True)),
    (RequesterKind.HTTP, None, (False, True)),
    (RequesterKind.BACKEND, None, (False, True)),
    (RequesterKind.DEVICE, CancelReason.DEVICE_DISCONNECTED, (True, False)),
    (RequesterKind.CONSTELLATION, CancelReason.DEVICE_DISCONNECTED, (True, False)),
    (RequesterKind.CONSTELLATION, CancelReason.CONSTELLATION_DISCONNECTED, (False, True)),
    (RequesterKind.BACKEND, CancelReason.DEVICE_DISCONNECTED, (False, False)),
    (RequesterKind.BACKEND, "requested", (False, True)),
    (RequesterKind.HTTP, CancelReason.DEADLINE_EXCEEDED, (False, True)),
])
def test_end_audience(kind: RequesterKind, reason: str | None,
                      expected: tuple[bool, bool]) -> None:
    assert end_audience(kind, reason) == expected


def test_the_sdk_needs_no_server_package() -> None:
    code = (
        "import sys, aip_client, aip_client.cli_task, aip_client.cli_device\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'gateway_service', 'session_service', 'aip_link', 'aip_grpc', 'grpc'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""
