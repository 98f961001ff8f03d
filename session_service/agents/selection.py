"""Which agent runs a session: a pure function of the request and the configuration."""

from __future__ import annotations

from session_service.agents.plan import PlanError, parse_plan

PLAN = "plan"
LLM = "llm"
#: The agents a requester may name.
CHOOSABLE = (PLAN, LLM)


class AgentChoiceError(ValueError):
    """The requester named an agent that cannot run here; the message says why."""


def is_plan(request: str) -> bool:
    try:
        parse_plan(request)
    except PlanError:
        return False
    return True


def select_agent(request: str, requested: str = "", *, llm_configured: bool) -> str:
    """The agent of a session.

    A named agent (``requested``: ``plan`` or ``llm``) is taken as named; otherwise a
    request that parses as a plan runs the plan agent and any other runs the
    language-model agent when one is configured. Without one it goes to the plan agent,
    which fails it with the plan's error (the clear answer to a natural-language
    request on a replica without a model).

    :raises AgentChoiceError: an unknown agent, or ``llm`` without a configured model.
    """
    if requested:
        if requested not in CHOOSABLE:
            raise AgentChoiceError(
                f"unknown agent {requested!r}: expected "
                f"{' or '.join(repr(name) for name in CHOOSABLE)}"
            )
        if requested == LLM and not llm_configured:
            raise AgentChoiceError(
                "the llm agent is not configured on this replica "
                "(it needs --llm-base-url and --llm-model)"
            )
        return requested
    if llm_configured and not is_plan(request):
        return LLM
    return PLAN
