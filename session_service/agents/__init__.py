"""Agents decide which commands a session sends. They are pluggable by name."""

from session_service.agents.base import Agent, AgentContext, Outcome
from session_service.agents.llm import LlmAgent
from session_service.agents.plan import PlanAgent

AGENTS: dict[str, type[Agent]] = {PlanAgent.name: PlanAgent, LlmAgent.name: LlmAgent}

__all__ = ["AGENTS", "Agent", "AgentContext", "LlmAgent", "Outcome", "PlanAgent"]
