"""gateway_service.rules: registration, identity pinning, task planning, device info."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from aip_wire.frames import ClientFrame
from aip_wire.vocab import CloseCode
from gateway_service.rules import (
    Refusal,
    Registration,
    TaskPlan,
    check_device,
    check_registration,
    check_target,
    device_info_of,
    device_info_scope,
    pin_identity,
    plan_task,
)
from gateway_service.ws_handler import close_code

CLOSE_BAD_REGISTRATION = CloseCode.BAD_REGISTRATION
CLOSE_TARGET_NOT_CONNECTED = CloseCode.TARGET_NOT_CONNECTED
#: The close codes, by the names they had as constants.
rules = SimpleNamespace(**{f"CLOSE_{code.name}": code for code in CloseCode})


def frame(**fields: Any) -> ClientFrame:
    return ClientFrame.model_validate(fields)


def connected(*ids: str) -> Any:
    known = set(ids)
    return lambda client_id: client_id in known


def nobody(client_id: str) -> bool:
    raise AssertionError(f"is_device_connected({client_id!r}) must not be asked")


def register(f: ClientFrame, is_connected: Any) -> Registration:
    """The registration rules as the socket adapter applies them."""
    registration = check_registration(f)
    if registration.target_id is not None:
        check_target(registration, is_connected(registration.target_id))
    return registration


def planned_task(f: ClientFrame, client_id: str, client_type: str, is_connected: Any) -> TaskPlan:
    """The task rules as the frame handler applies them."""
    planned = plan_task(f, client_id, client_type)
    if planned.check_device:
        check_device(planned, is_connected(planned.device_id))
    return planned


# ---------------------------------------------------------------------- device_info_of


def test_device_info_of_prefers_system_info() -> None:
    assert device_info_of({"platform": "linux", "system_info": {"cpu": 4}}) == {"cpu": 4}


def test_device_info_of_whole_metadata_without_system_info() -> None:
    metadata = {"platform": "linux", "os": "Ubuntu"}
    assert device_info_of(metadata) == metadata


def test_device_info_of_whole_metadata_when_system_info_not_an_object() -> None:
    metadata = {"platform": "linux", "system_info": "n/a"}
    assert device_info_of(metadata) == metadata


@pytest.mark.parametrize("metadata", [None, {}])
def test_device_info_of_empty(metadata: dict[str, Any] | None) -> None:
    assert device_info_of(metadata) == {}


# ----------------------------------------------------------------- check_registration


def test_register_device_defaults() -> None:
    reg = register(frame(type="register", client_id="dev1"), nobody)
    assert reg.client_id == "dev1"
    assert reg.client_type == "device"
    assert reg.platform == "windows"
    assert reg.target_id is None
    assert reg.device_info == {}


def test_register_device_with_metadata_system_info() -> None:
    reg = register(
        frame(
            type="register",
            client_type="device",
            client_id="dev1",
            metadata={"platform": "linux", "system_info": {"os": "Linux", "cpu": 8}},
        ),
        nobody,
    )
    assert reg.client_type == "device"
    assert reg.platform == "linux"
    assert reg.device_info == {"os": "Linux", "cpu": 8}


def test_register_device_without_system_info_uses_whole_metadata() -> None:
    metadata = {"platform": "linux", "hostname": "box"}
    reg = register(
        frame(type="register", client_id="dev1", metadata=metadata), nobody
    )
    assert reg.device_info == metadata


@pytest.mark.parametrize("platform", [None, "", 5, ["linux"]])
def test_register_platform_defaults_to_windows(platform: Any) -> None:
    reg = register(
        frame(type="register", client_id="dev1", metadata={"platform": platform}), nobody
    )
    assert reg.platform == "windows"


def test_register_device_ignores_target_id() -> None:
    reg = register(
        frame(type="register", client_id="dev1", target_id="dev2"), nobody
    )
    assert reg.target_id is None


def test_register_with_case_insensitive_client_type_from_the_wire() -> None:
    from aip_wire.frames import parse_client_frame

    parsed = parse_client_frame(
        '{"type":"REGISTER","client_type":"Constellation","client_id":"c1","status":"OK"}'
    )
    reg = register(parsed, nobody)
    assert reg.client_type == "constellation"


@pytest.mark.parametrize("kind", ["heartbeat", "task", "command_results", "error", "bogus"])
def test_first_frame_must_be_register(kind: str) -> None:
    with pytest.raises(Refusal) as info:
        register(frame(type=kind, client_id="dev1"), nobody)
    assert info.value.reason == "First message must be a registration message"
    assert close_code(info.value) == CLOSE_BAD_REGISTRATION
    assert str(info.value) == info.value.reason


@pytest.mark.parametrize("client_id", [None, "", "   ", "\t\n"])
def test_register_needs_client_id(client_id: str | None) -> None:
    with pytest.raises(Refusal) as info:
        register(frame(type="register", client_id=client_id), nobody)
    assert info.value.reason == "Client ID is required for WebSocket registration"
    assert close_code(info.value) == CLOSE_BAD_REGISTRATION


@pytest.mark.parametrize("kind", ["robot", "server", "devices"])
def test_register_unknown_client_type(kind: str) -> None:
    with pytest.raises(Refusal) as info:
        register(frame(type="register", client_id="x", client_type=kind), nobody)
    assert info.value.reason == (
        f"Unknown client_type '{kind}': expected 'device' or 'constellation'"
    )
    assert close_code(info.value) == CLOSE_BAD_REGISTRATION


def test_register_constellation_with_connected_target() -> None:
    reg = register(
        frame(
            type="register",
            client_type="constellation",
            client_id="c1",
            target_id="dev1",
            metadata={"platform": "linux", "system_info": {"x": 1}},
        ),
        connected("dev1"),
    )
    assert reg.client_type == "constellation"
    assert reg.target_id == "dev1"
    assert reg.platform == "linux"
    assert reg.device_info == {}


def test_register_constellation_target_not_connected() -> None:
    with pytest.raises(Refusal) as info:
        register(
            frame(type="register", client_type="constellation", client_id="c1",
                  target_id="dev1"),
            connected("dev2"),
        )
    assert info.value.reason == "Target device 'dev1' is not connected"
    assert close_code(info.value) == CLOSE_TARGET_NOT_CONNECTED
    assert CLOSE_TARGET_NOT_CONNECTED == 4404


@pytest.mark.parametrize("target", [None, ""])
def test_register_constellation_without_target(target: str | None) -> None:
    reg = register(
        frame(type="register", client_type="constellation", client_id="c1", target_id=target),
        nobody,
    )
    assert reg.client_type == "constellation"
    assert reg.target_id is None


def test_close_codes_are_application_codes() -> None:
    for name in dir(rules):
        if name.startswith("CLOSE_") and name != "CLOSE_SERVICE_RESTART":
            assert 4000 <= getattr(rules, name) <= 4999, name
    # Draining uses the standard "service restart" code, which clients know to retry.
    assert rules.CLOSE_SERVICE_RESTART == 1012


# ------------------------------------------------------------------------ pin_identity


def test_pin_identity_writes_back_bound_identity() -> None:
    f = frame(type="task", request="x")
    assert pin_identity(f, "dev1", "device") is None
    assert f.client_id == "dev1"
    assert f.client_type == "device"


def test_pin_identity_accepts_matching_identity() -> None:
    f = frame(type="task", client_id="c1", client_type="constellation")
    assert pin_identity(f, "c1", "constellation") is None
    assert f.client_id == "c1"
    assert f.client_type == "constellation"


@pytest.mark.parametrize(
    "kind", ["task", "command_results", "device_info_request", "device_info_response",
             "error", "task_end", "register"],
)
def test_pin_identity_refuses_spoofed_client_id(kind: str) -> None:
    f = frame(type=kind, client_id="dev2")
    problem = pin_identity(f, "dev1", "device")
    assert problem == (
        "client_id 'dev2' does not match this connection's registered identity 'dev1'"
    )
    assert f.client_id == "dev2"  # not rewritten when refused


def test_pin_identity_refuses_spoofed_client_type() -> None:
    f = frame(type="task", client_id="dev1", client_type="constellation")
    problem = pin_identity(f, "dev1", "device")
    assert problem == (
        "client_type 'constellation' does not match this connection's registered type 'device'"
    )


def test_pin_identity_heartbeat_with_other_identity_is_accepted_and_rewritten() -> None:
    f = frame(type="heartbeat", client_id="someone-else", client_type="device")
    assert pin_identity(f, "c1", "constellation") is None
    assert f.client_id == "c1"
    assert f.client_type == "constellation"


# --------------------------------------------------------------------------- plan_task


@pytest.mark.parametrize("request_text", [None, "", "   ", "\n\t"])
def test_plan_task_empty_request(request_text: str | None) -> None:
    with pytest.raises(ValueError, match=r"^Task request cannot be empty$"):
        planned_task(frame(type="task", request=request_text), "dev1", "device", nobody)


def test_plan_task_device_on_itself() -> None:
    plan = planned_task(
        frame(type="task", request="do", task_name="t1", session_id="s1"),
        "dev1", "device", nobody,
    )
    assert plan.session_id == "s1"
    assert plan.task_name == "t1"
    assert plan.request == "do"
    assert plan.device_id == "dev1"


def test_plan_task_device_naming_itself_as_target() -> None:
    plan = planned_task(
        frame(type="task", request="do", target_id="dev1"), "dev1", "device", nobody
    )
    assert plan.device_id == "dev1"


def test_plan_task_device_targeting_another_device() -> None:
    with pytest.raises(ValueError) as info:
        planned_task(frame(type="task", request="do", target_id="dev2"), "dev1", "device",
                  connected("dev2"))
    assert str(info.value) == (
        "A device may only run tasks on itself; target_id 'dev2' names another client"
    )


@pytest.mark.parametrize("target", [None, ""])
def test_plan_task_constellation_without_target(target: str | None) -> None:
    with pytest.raises(ValueError, match=r"^Constellation must specify target_id$"):
        planned_task(frame(type="task", request="do", target_id=target), "c1", "constellation",
                  nobody)


def test_plan_task_constellation_unconnected_target() -> None:
    with pytest.raises(ValueError, match=r"^Target device 'dev9' not connected$"):
        planned_task(frame(type="task", request="do", target_id="dev9"), "c1", "constellation",
                  connected("dev1"))


def test_plan_task_constellation_to_connected_device() -> None:
    plan = planned_task(
        frame(type="task", request="do", target_id="dev1", task_name="galaxy/x/t-1",
              session_id="constellation-name@t-1234abcd"),
        "c1", "constellation", connected("dev1"),
    )
    assert plan.device_id == "dev1"
    assert plan.session_id == "constellation-name@t-1234abcd"  # byte for byte
    assert plan.task_name == "galaxy_x_t-1"


@pytest.mark.parametrize("session_id", [None, ""])
def test_plan_task_generates_session_id(session_id: str | None) -> None:
    first = planned_task(frame(type="task", request="do", session_id=session_id), "d", "device",
                      nobody)
    second = planned_task(frame(type="task", request="do", session_id=session_id), "d", "device",
                       nobody)
    assert str(uuid.UUID(first.session_id)) == first.session_id
    assert first.session_id != second.session_id


@pytest.mark.parametrize(
    ("task_name", "expected"),
    [("../../etc/passwd", "_._.._etc_passwd"), (".x", "_x"), ("ok-name", "ok-name")],
)
def test_plan_task_sanitizes_task_name(task_name: str, expected: str) -> None:
    plan = planned_task(frame(type="task", request="do", task_name=task_name), "d", "device",
                     nobody)
    assert plan.task_name == expected


def test_plan_task_without_task_name_generates_one() -> None:
    plan = planned_task(frame(type="task", request="do"), "d", "device", nobody)
    assert re.fullmatch(r"task-[0-9a-f]{12}", plan.task_name)


def test_plan_task_keeps_request_verbatim() -> None:
    plan = planned_task(frame(type="task", request="  spaced  "), "d", "device", nobody)
    assert plan.request == "  spaced  "


# -------------------------------------------------------------------- device_info_scope


def test_device_info_scope_refuses_devices() -> None:
    assert device_info_scope(frame(type="device_info_request", target_id="dev1"), "device",
                             None) == (None, "Only constellation clients may request device info")


def test_device_info_scope_needs_a_target() -> None:
    assert device_info_scope(frame(type="device_info_request"), "constellation", None) == (
        None, "device_info_request needs a target_id"
    )


def test_device_info_scope_uses_frame_target() -> None:
    assert device_info_scope(
        frame(type="device_info_request", target_id="dev1"), "constellation", None
    ) == ("dev1", None)


def test_device_info_scope_defaults_to_registered_target() -> None:
    assert device_info_scope(frame(type="device_info_request"), "constellation", "dev1") == (
        "dev1", None
    )


def test_device_info_scope_same_target_as_registered() -> None:
    assert device_info_scope(
        frame(type="device_info_request", target_id="dev1"), "constellation", "dev1"
    ) == ("dev1", None)


def test_device_info_scope_other_target_than_registered() -> None:
    assert device_info_scope(
        frame(type="device_info_request", target_id="dev2"), "constellation", "dev1"
    ) == (
        None,
        "This constellation registered for device 'dev1' and may not read device 'dev2'",
    )
