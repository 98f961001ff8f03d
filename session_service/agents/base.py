"""What an agent is, and what it may do with its session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from session_service.agents.llm_config import LlmConfig


@dataclass(frozen=True, slots=True)
class Step:
    """One batch of commands, sent to the device as one ``command`` frame."""

    actions: list[dict[str, Any]]
    agent_name: str | None = None
    process_name: str | None = None
    root_name: str | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a session ends: ``error`` is ``None`` on success."""

    result: Any
    error: str | None = None


class AgentContext(Protocol):
    """The session as an agent sees it."""

    session_id: str
    task_name: str
    request: str
    platform: str
    device_info: dict[str, Any]
    #: The replica's language-model endpoint (``None``: not configured), and the model
    #: the requester chose for this session (``""``: the endpoint's default).
    llm: LlmConfig | None
    model: str
    #: Bytes of results the session keeps in memory (``--session-log-bytes``); results
    #: an agent keeps for its own use or its result stay within it too.
    log_bytes: int

    def set_total_steps(self, total: int) -> None: ...

    async def run_step(self, step: Step) -> list[dict[str, Any]]:
        """Send one step and return its results (failures on timeout)."""
        ...

    def record_turn(self, turn: dict[str, Any]) -> None:
        """Add one model turn (JSON-able) to the session's transcript and tell watchers."""
        ...


class Agent(Protocol):
    name: str

    async def run(self, context: AgentContext) -> Outcome: ...
