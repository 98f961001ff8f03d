"""session_service.agents.plan: plan parsing and the plan agent."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from session_service.agents.base import Outcome, Step
from session_service.agents.plan import (
    PLAN_FORM,
    Plan,
    PlanAgent,
    PlanError,
    first_failure,
    parse_plan,
)

LS = {"tool_name": "ls", "parameters": {"path": "/"}, "tool_type": "action", "call_id": "c1"}
PWD = {"tool_name": "pwd", "parameters": None, "tool_type": "data_collection", "call_id": "c2"}


def cmd(tool_name: str, call_id: str, **extra: Any) -> dict[str, Any]:
    return {"tool_name": tool_name, "parameters": {}, "tool_type": "action", "call_id": call_id,
            **extra}


# ---------------------------------------------------------------------------- parsing


def test_list_of_commands_one_per_step() -> None:
    plan = parse_plan(json.dumps([LS, PWD]))
    assert plan == Plan(
        steps=[
            Step(actions=[LS]),
            Step(actions=[{**PWD, "parameters": {}}]),
        ],
        continue_on_failure=False,
    )


def test_steps_form_with_lists_of_commands() -> None:
    plan = parse_plan(json.dumps({"steps": [[LS, PWD], [LS]]}))
    assert [len(step.actions) for step in plan.steps] == [2, 1]
    assert plan.steps[0].actions[1]["tool_type"] == "data_collection"
    assert plan.steps[0].actions[1]["parameters"] == {}
    assert plan.continue_on_failure is False
    assert all(step.agent_name is None and step.timeout is None for step in plan.steps)


def test_continue_on_failure_flag() -> None:
    assert parse_plan(json.dumps({"steps": [[LS]], "continue_on_failure": True})) \
        .continue_on_failure is True


def test_step_object_with_routing_fields_and_timeout() -> None:
    plan = parse_plan(json.dumps({"steps": [{
        "actions": [LS], "agent_name": "LinuxAgent", "process_name": "bash",
        "root_name": "root", "timeout": 30,
    }]}))
    assert plan.steps == [Step(actions=[LS], agent_name="LinuxAgent", process_name="bash",
                               root_name="root", timeout=30.0)]
    assert isinstance(plan.steps[0].timeout, float)


def test_top_level_defaults_apply_to_every_step_and_steps_override() -> None:
    plan = parse_plan(json.dumps({
        "agent_name": "A", "process_name": "P", "root_name": "R", "timeout": 5,
        "steps": [[LS], {"actions": [LS], "agent_name": "B", "timeout": 2.5}],
    }))
    first, second = plan.steps
    assert (first.agent_name, first.process_name, first.root_name, first.timeout) == (
        "A", "P", "R", 5.0
    )
    assert (second.agent_name, second.process_name, second.root_name, second.timeout) == (
        "B", "P", "R", 2.5
    )


def test_top_level_defaults_do_not_apply_to_the_list_form() -> None:
    plan = parse_plan(json.dumps([{"tool_name": "ls", "agent_name": "X", "timeout": 3}]))
    assert plan.steps[0].agent_name is None
    assert plan.steps[0].timeout is None


def test_bare_command_as_a_step_in_steps() -> None:
    plan = parse_plan(json.dumps({"steps": [LS]}))
    assert plan.steps == [Step(actions=[LS])]


def test_command_defaults_tool_type_and_parameters_and_generates_call_id() -> None:
    plan = parse_plan(json.dumps([{"tool_name": "ls"}, {"tool_name": "ls"}]))
    first = plan.steps[0].actions[0]
    second = plan.steps[1].actions[0]
    assert first["tool_type"] == "action"
    assert first["parameters"] == {}
    assert re.fullmatch(r"[0-9a-f]{12}", first["call_id"])
    assert first["call_id"] != second["call_id"]
    assert set(first) == {"tool_name", "parameters", "tool_type", "call_id"}


def test_command_tool_type_case_insensitive_and_call_id_to_text() -> None:
    plan = parse_plan(json.dumps([
        {"tool_name": "ls", "tool_type": "DATA_COLLECTION", "call_id": 7, "extra": 1},
    ]))
    assert plan.steps[0].actions[0] == {
        "tool_name": "ls", "parameters": {}, "tool_type": "data_collection", "call_id": "7",
    }


def assert_plan_error(request: str, problem: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(request)
    message = str(info.value)
    assert problem in message
    assert message.startswith("The request is not a valid plan (")
    assert message.endswith(f"Expected {PLAN_FORM}.")
    assert '{"steps": [[command, ...], ...]}' in message
    assert "a list of commands" in message


@pytest.mark.parametrize(
    ("request_text", "problem"),
    [
        ("open notepad please", "it is not JSON"),
        ("", "it is not JSON"),
        ('"just a string"', "it is neither an object nor a list"),
        ("42", "it is neither an object nor a list"),
        ("null", "it is neither an object nor a list"),
        ("[]", "it has no steps"),
        ('{"steps": []}', "it has no steps"),
        ('{"step": [[]]}', "the object has no 'steps' list"),
        ('{"steps": {"a": 1}}', "the object has no 'steps' list"),
        ('{"steps": [[{"tool_name":"x"}]], "continue_on_failure": "yes"}',
         "continue_on_failure must be true or false"),
        ('{"steps": [[{"tool_name":"x"}]], "continue_on_failure": 1}',
         "continue_on_failure must be true or false"),
        ('[5]', "step 1 is neither a list of commands nor an object with 'actions'"),
        ('["ls"]', "step 1 is neither a list of commands nor an object with 'actions'"),
        ('[{"name": "ls"}]', "step 1 is neither a list of commands nor an object with 'actions'"),
        ('{"steps": [[]]}', "step 1 has no commands"),
        ('{"steps": [{"actions": []}]}', "step 1 has no commands"),
        ('{"steps": [{"actions": "ls"}]}', "step 1 has no commands"),
        ('{"steps": [[{"tool_name":"x"}], [5]]}', "step 2, command 1 is not a command object"),
        ('[{"tool_name": ""}]', "step 1, command 1 has no tool_name"),
        ('[{"tool_name": 3}]', "step 1, command 1 has no tool_name"),
        ('{"steps": [[{"tool_name":"x"}, {"tool_name": null}]]}',
         "step 1, command 2 has no tool_name"),
        ('[{"tool_name": "x", "parameters": [1]}]',
         "step 1, command 1: parameters must be an object or null"),
        ('[{"tool_name": "x", "tool_type": "shell"}]',
         "step 1, command 1: tool_type must be 'action' or 'data_collection'"),
        ('[{"tool_name": "x", "tool_type": 5}]',
         "step 1, command 1: tool_type must be 'action' or 'data_collection'"),
        ('{"steps": [{"actions": [{"tool_name":"x"}], "agent_name": 5}]}',
         "step 1: agent_name must be a string"),
        ('{"process_name": [], "steps": [[{"tool_name":"x"}]]}',
         "step 1: process_name must be a string"),
        ('{"steps": [{"actions": [{"tool_name":"x"}], "root_name": {}}]}',
         "step 1: root_name must be a string"),
        ('{"steps": [{"actions": [{"tool_name":"x"}], "timeout": 0}]}',
         "step 1: timeout must be a positive number of seconds"),
        ('{"steps": [{"actions": [{"tool_name":"x"}], "timeout": -1}]}',
         "step 1: timeout must be a positive number of seconds"),
        ('{"steps": [{"actions": [{"tool_name":"x"}], "timeout": true}]}',
         "step 1: timeout must be a positive number of seconds"),
        ('{"timeout": "10", "steps": [[{"tool_name":"x"}]]}',
         "step 1: timeout must be a positive number of seconds"),
    ],
)
def test_bad_plans(request_text: str, problem: str) -> None:
    assert_plan_error(request_text, problem)


def test_plan_error_is_a_value_error() -> None:
    assert issubclass(PlanError, ValueError)


def test_first_failure() -> None:
    ok = {"status": "success", "call_id": "a"}
    bad = {"status": "failure", "call_id": "b"}
    bad2 = {"status": "failure", "call_id": "c"}
    assert first_failure([ok, bad, bad2]) is bad
    assert first_failure([ok, {"status": "skipped"}, {"status": "none"}]) is None
    assert first_failure([]) is None


# ------------------------------------------------------------------------------ agent


@dataclass
class FakeContext:
    request: str
    platform: str = "windows"
    session_id: str = "s1"
    task_name: str = "t1"
    device_info: dict[str, Any] = field(default_factory=dict)
    replies: list[list[dict[str, Any]]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    total: int | None = None
    log_bytes: int = 32 * 1024 * 1024

    def set_total_steps(self, total: int) -> None:
        self.total = total

    async def run_step(self, step: Step) -> list[dict[str, Any]]:
        self.steps.append(step)
        if self.replies:
            return self.replies.pop(0)
        return [{"status": "success", "error": None, "result": a["tool_name"],
                 "namespace": None, "call_id": a["call_id"]} for a in step.actions]


def ok(call_id: str) -> dict[str, Any]:
    return {"status": "success", "error": None, "result": None, "namespace": None,
            "call_id": call_id}


def fail(call_id: str, error: str | None = "boom") -> dict[str, Any]:
    return {"status": "failure", "error": error, "result": None, "namespace": None,
            "call_id": call_id}


async def test_agent_runs_every_step_and_returns_step_results() -> None:
    context = FakeContext(json.dumps({"steps": [[cmd("ls", "a")], [cmd("pwd", "b"),
                                                                    cmd("id", "c")]]}))
    outcome = await PlanAgent().run(context)
    assert outcome == Outcome(result=[
        [{"status": "success", "error": None, "result": "ls", "namespace": None,
          "call_id": "a"}],
        [{"status": "success", "error": None, "result": "pwd", "namespace": None,
          "call_id": "b"},
         {"status": "success", "error": None, "result": "id", "namespace": None,
          "call_id": "c"}],
    ], error=None)
    assert context.total == 2
    assert [[a["call_id"] for a in s.actions] for s in context.steps] == [["a"], ["b", "c"]]
    assert PlanAgent.name == "plan"


async def test_agent_stops_at_first_failure() -> None:
    context = FakeContext(
        json.dumps([cmd("a", "a"), cmd("b", "b"), cmd("c", "c")]),
        replies=[[ok("a")], [ok("x"), fail("b", "no such tool")], [ok("c")]],
    )
    outcome = await PlanAgent().run(context)
    assert outcome.result == [[ok("a")], [ok("x"), fail("b", "no such tool")]]
    assert outcome.error == "Step 2 failed (call_id b): no such tool"
    assert len(context.steps) == 2
    assert context.total == 3


async def test_agent_failure_without_error_or_call_id() -> None:
    failure = {"status": "failure", "error": None, "result": None, "namespace": None,
               "call_id": None}
    context = FakeContext(json.dumps([cmd("a", "a")]), replies=[[failure]])
    outcome = await PlanAgent().run(context)
    assert outcome.error == "Step 1 failed (call_id ?): the device reported failure"
    assert outcome.result == [[failure]]


async def test_agent_continue_on_failure_runs_all_steps() -> None:
    context = FakeContext(
        json.dumps({"steps": [[cmd("a", "a")], [cmd("b", "b")], [cmd("c", "c")]],
                    "continue_on_failure": True}),
        replies=[[fail("a")], [fail("b")], [ok("c")]],
    )
    outcome = await PlanAgent().run(context)
    assert outcome.error is None
    assert outcome.result == [[fail("a")], [fail("b")], [ok("c")]]
    assert len(context.steps) == 3


async def test_agent_bad_plan_sends_nothing() -> None:
    context = FakeContext("please open notepad")
    outcome = await PlanAgent().run(context)
    assert outcome.result is None
    assert outcome.error is not None
    assert outcome.error.startswith("The request is not a valid plan (it is not JSON")
    assert PLAN_FORM in outcome.error
    assert context.steps == []
    assert context.total is None


@pytest.mark.parametrize("platform", ["linux", "Linux", "LINUX"])
async def test_agent_default_agent_name_on_linux(platform: str) -> None:
    context = FakeContext(
        json.dumps({"steps": [[cmd("a", "a")], {"actions": [cmd("b", "b")],
                                                "agent_name": "Custom", "timeout": 4}]}),
        platform=platform,
    )
    await PlanAgent().run(context)
    assert [step.agent_name for step in context.steps] == ["LinuxAgent", "Custom"]
    assert context.steps[1].timeout == 4.0


async def test_agent_default_agent_name_keeps_other_step_fields() -> None:
    context = FakeContext(
        json.dumps({"process_name": "p", "root_name": "r", "timeout": 9,
                    "steps": [[cmd("a", "a")]]}),
        platform="linux",
    )
    await PlanAgent().run(context)
    assert context.steps == [Step(actions=[cmd("a", "a")], agent_name="LinuxAgent",
                                  process_name="p", root_name="r", timeout=9.0)]


@pytest.mark.parametrize("platform", ["windows", "macos", ""])
async def test_agent_no_default_agent_name_elsewhere(platform: str) -> None:
    context = FakeContext(json.dumps([cmd("a", "a")]), platform=platform)
    await PlanAgent().run(context)
    assert context.steps[0].agent_name is None
