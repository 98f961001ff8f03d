"""Property-based fuzzing of the gateway rules.

Invariants: :func:`check_registration` and :func:`check_target` accept a frame or raise
a :class:`Refusal` with a close code in 4000-4999 and a reason; :func:`plan_task` and
:func:`check_device` accept a frame or raise a :class:`ValueError` with a message. What
they accept is a well-formed registration or task plan.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from aip_wire.vocab import ClientType
from gateway_service.rules import (
    Refusal,
    check_device,
    check_registration,
    check_target,
    plan_task,
)
from gateway_service.ws_handler import close_code
from tests.unit.fuzz_support import FUZZ, JSON_64, check, frame_objects


@FUZZ
@given(frame_objects(JSON_64).map(json.dumps), st.sets(st.sampled_from(["dev1", "dev2", ""])))
def test_check_registration_only_refuses(data: str, connected: set[str]) -> None:
    frame = check(data)
    if frame is None:
        return
    try:
        reg = check_registration(frame)
        if reg.target_id is not None:
            check_target(reg, reg.target_id in connected)
    except Refusal as refusal:
        assert 4000 <= close_code(refusal) <= 4999
        assert refusal.reason
        return
    assert frame.type == "register"
    assert reg.client_id.strip()
    assert reg.client_type in frozenset(ClientType)
    assert isinstance(reg.platform, str) and reg.platform
    assert isinstance(reg.device_info, dict)
    if reg.target_id is not None:
        assert reg.client_type == "constellation"
        assert reg.target_id in connected


@FUZZ
@given(frame_objects(JSON_64).map(json.dumps), st.sampled_from(["device", "constellation"]),
       st.sets(st.sampled_from(["dev1", "dev2"])))
def test_plan_task_only_raises_value_error(data: str, kind: str, connected: set[str]) -> None:
    frame = check(data)
    if frame is None:
        return
    try:
        plan = plan_task(frame, "dev1" if kind == "device" else "c1", kind)
        if plan.check_device:
            check_device(plan, plan.device_id in connected)
    except ValueError as exc:
        assert str(exc)
        return
    assert plan.request.strip()
    assert plan.session_id
    assert plan.task_name and not plan.task_name.startswith(".")
    assert "/" not in plan.task_name
    if kind == "device":
        assert plan.device_id == "dev1"
    else:
        assert plan.device_id in connected
