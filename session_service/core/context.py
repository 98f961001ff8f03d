"""The :class:`~session_service.agents.base.AgentContext` of one session: how its agent
sends a step to the device and gets the results back, with every command logged."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aip_runtime import tracing
from aip_wire import frames
from session_service import metrics
from session_service.agents.base import Step
from session_service.core.log_budget import approx_bytes, keep_within
from session_service.core.session import CommandEntry, Session, Update, UpdateKind

if TYPE_CHECKING:
    from session_service.agents.llm_config import LlmConfig
    from session_service.core.ports import RecordSink


class AgentSessionContext:
    def __init__(self, session: Session, records: RecordSink, command_timeout: float,
                 log_bytes: int, llm: LlmConfig | None = None) -> None:
        self._session = session
        self._records = records
        self._command_timeout = command_timeout
        self.log_bytes = log_bytes
        self.session_id = session.session_id
        self.task_name = session.task_name
        self.request = session.request
        self.platform = session.platform
        self.device_info = session.device_info
        self.llm = llm
        self.model = session.model

    def set_total_steps(self, total: int) -> None:
        self._session.steps_total = total

    async def run_step(self, step: Step) -> list[dict[str, Any]]:
        if not tracing.enabled():
            return await self._run_step(step)
        with tracing.tracer().start_as_current_span("aip.command", attributes={
                "aip.session_id": self.session_id, "aip.step": len(self._session.commands),
                "aip.actions": len(step.actions)}) as span:
            results = await self._run_step(step)
            span.set_attribute("aip.status", self._session.commands[-1].status)
            return results

    async def _run_step(self, step: Step) -> list[dict[str, Any]]:
        session = self._session
        assert session.dispatcher is not None
        timeout = step.timeout or self._command_timeout
        frame = frames.command_frame(
            session_id=session.session_id,
            task_name=session.task_name,
            response_id=frames.new_id(),
            actions=step.actions,
            agent_name=step.agent_name,
            process_name=step.process_name,
            root_name=step.root_name,
        )
        entry = CommandEntry(len(session.commands), frame["response_id"], step.actions,
                             time.time())
        session.commands.append(entry)
        self._records.record_command(session.session_id, entry.seq, entry.response_id,
                                     entry.actions, entry.sent_at)
        session.publish(Update(UpdateKind.COMMAND_SENT, frame["response_id"], step.actions))
        started = time.perf_counter()
        results, entry.status = await session.dispatcher.execute_detailed(
            frame, [action["call_id"] for action in step.actions], timeout
        )
        metrics.COMMAND_SECONDS.observe(time.perf_counter() - started)
        entry.results, entry.received_at = results, time.time()
        entry.size = approx_bytes(results)
        self._records.record_results(session.session_id, entry.seq, results,
                                     entry.received_at, entry.status, entry.size)
        session.steps_done += 1
        session.log_bytes += entry.size
        if session.log_bytes > self.log_bytes:
            metrics.RESULTS_RELEASED.inc(keep_within(session, self.log_bytes))
        session.publish(Update(UpdateKind.RESULTS_RECEIVED, frame["response_id"], results))
        return results

    def record_turn(self, turn: dict[str, Any]) -> None:
        session = self._session
        session.turns.append(turn)
        self._records.record_turn(session.session_id, len(session.turns) - 1, turn,
                                  time.time())
        session.publish(Update(UpdateKind.MODEL_TURN, "", turn))
