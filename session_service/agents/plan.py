"""The default agent: runs a structured plan given in the request, no model needed.

Accepted requests (JSON text)::

    {"steps": [[command, ...], ...], "continue_on_failure": false}
    [command, command, ...]                       # one command per step

A step is a list of commands, or an object that also says how the device routes it::

    {"actions": [command, ...], "agent_name": "LinuxAgent", "process_name": null,
     "root_name": null, "timeout": 30}

A command is ``{"tool_name": str, "parameters": object|null, "tool_type":
"action"|"data_collection", "call_id": str}``; ``tool_type`` defaults to ``action`` and a
missing ``call_id`` is generated. ``agent_name``, ``process_name``, ``root_name`` and
``timeout`` may also be given at the top level of the plan object as defaults for every
step. The result is the list of step results, the oldest elided once they pass the
session's memory budget (``--session-log-bytes``; see :class:`~session_service.core.
log_budget.StepResults`: the store's record keeps every command's results); the
session fails at the first step with a ``failure`` result unless ``continue_on_failure``
is true.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from session_service.agents.base import AgentContext, Outcome, Step
from session_service.core.log_budget import StepResults

PLAN_FORM = (
    'a JSON plan: {"steps": [[command, ...], ...]} or a list of commands, where a command '
    'is {"tool_name": str, "parameters": object, "tool_type": "action"|"data_collection", '
    '"call_id": str}'
)
TOOL_TYPES = frozenset({"action", "data_collection"})
STEP_FIELDS = ("agent_name", "process_name", "root_name")
#: Reference devices route a command to a tool server by agent_name; this is the one a
#: Linux device serves, used when the plan names none.
DEFAULT_AGENT_NAMES = {"linux": "LinuxAgent"}


class PlanError(ValueError):
    """The request is not a plan; the message names what was wrong and the accepted form."""


@dataclass(frozen=True, slots=True)
class Plan:
    steps: list[Step]
    continue_on_failure: bool = False


def _fail(problem: str) -> PlanError:
    return PlanError(f"The request is not a valid plan ({problem}). Expected {PLAN_FORM}.")


def _command(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{where} is not a command object")
    tool_name = value.get("tool_name")
    if not isinstance(tool_name, str) or not tool_name:
        raise _fail(f"{where} has no tool_name")
    parameters = value.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _fail(f"{where}: parameters must be an object or null")
    tool_type = value.get("tool_type") or "action"
    if not isinstance(tool_type, str) or tool_type.lower() not in TOOL_TYPES:
        raise _fail(f"{where}: tool_type must be 'action' or 'data_collection'")
    call_id = value.get("call_id")
    if call_id is None:
        call_id = uuid.uuid4().hex[:12]
    elif not isinstance(call_id, str):
        call_id = str(call_id)
    return {
        "tool_name": tool_name,
        "parameters": parameters if parameters is not None else {},
        "tool_type": tool_type.lower(),
        "call_id": call_id,
    }


def _optional_text(value: Any, name: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _fail(f"{where}: {name} must be a string")


def _timeout(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(f"{where}: timeout must be a positive number of seconds")
    return float(value)


def _step(value: Any, index: int, defaults: dict[str, Any]) -> Step:
    where = f"step {index + 1}"
    if isinstance(value, list):
        fields: dict[str, Any] = {"actions": value}
    elif isinstance(value, dict) and "actions" in value:
        fields = value
    elif isinstance(value, dict) and "tool_name" in value:
        fields = {"actions": [value]}  # a bare command as a one-command step
    else:
        raise _fail(f"{where} is neither a list of commands nor an object with 'actions'")
    actions = fields.get("actions")
    if not isinstance(actions, list) or not actions:
        raise _fail(f"{where} has no commands")
    merged = {name: fields.get(name, defaults.get(name)) for name in (*STEP_FIELDS, "timeout")}
    return Step(
        actions=[_command(item, f"{where}, command {n + 1}") for n, item in enumerate(actions)],
        agent_name=_optional_text(merged["agent_name"], "agent_name", where),
        process_name=_optional_text(merged["process_name"], "process_name", where),
        root_name=_optional_text(merged["root_name"], "root_name", where),
        timeout=_timeout(merged["timeout"], where),
    )


def parse_plan(request: str) -> Plan:
    """Parse a request into a plan.

    :raises PlanError: the request is not JSON or not of the accepted form.
    """
    try:
        data = orjson.loads(request)
    except orjson.JSONDecodeError:
        raise _fail("it is not JSON; natural-language requests need a language-model "
                    "agent, which is not configured") from None
    defaults: dict[str, Any] = {}
    continue_on_failure = False
    if isinstance(data, dict):
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise _fail("the object has no 'steps' list")
        defaults = {name: data.get(name) for name in (*STEP_FIELDS, "timeout")}
        flag = data.get("continue_on_failure", False)
        if not isinstance(flag, bool):
            raise _fail("continue_on_failure must be true or false")
        continue_on_failure = flag
    elif isinstance(data, list):
        steps = data
    else:
        raise _fail("it is neither an object nor a list")
    if not steps:
        raise _fail("it has no steps")
    return Plan(
        steps=[_step(item, n, defaults) for n, item in enumerate(steps)],
        continue_on_failure=continue_on_failure,
    )


def first_failure(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    for result in results:
        if result.get("status") == "failure":
            return result
    return None


class PlanAgent:
    """Sends each step of the plan as one command and collects the results."""

    name = "plan"

    async def run(self, context: AgentContext) -> Outcome:
        try:
            plan = parse_plan(context.request)
        except PlanError as exc:
            return Outcome(result=None, error=str(exc))
        context.set_total_steps(len(plan.steps))
        default_agent = DEFAULT_AGENT_NAMES.get(context.platform.lower())
        # Every step's results make the result, the oldest elided past the session's
        # memory budget: a long plan of screenshots would otherwise hold them all.
        step_results = StepResults(context.log_bytes)
        for index, step in enumerate(plan.steps):
            if step.agent_name is None and default_agent is not None:
                step = Step(step.actions, default_agent, step.process_name, step.root_name,
                            step.timeout)
            results = await context.run_step(step)
            step_results.append(results)
            failed = first_failure(results)
            if failed is not None and not plan.continue_on_failure:
                call = failed.get("call_id") or "?"
                return Outcome(
                    result=step_results.items,
                    error=f"Step {index + 1} failed (call_id {call}): "
                    f"{failed.get('error') or 'the device reported failure'}",
                )
        return Outcome(result=step_results.items)
