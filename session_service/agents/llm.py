"""The language-model agent: a natural-language task done step by step by a model.

It asks the device which tools it has (two ``list_tools`` commands, for ``action`` and
``data_collection`` tools, as the reference server does), offers them to the model as
functions of an OpenAI-compatible Chat Completions endpoint, and runs each tool call the
model makes as one ``command`` frame, whose results go back to the model (images as
images). The session ends when the model answers without calling a tool (``completed``,
result ``{"answer": ..., "steps": N}``), or fails when the model refuses, its call fails
after the client's retries, or it calls more than ``max_steps`` tools. Every model turn
is recorded in the session's transcript (:meth:`AgentContext.record_turn`).

Cancelling the session cancels the task running :meth:`LlmAgent.run`; nothing here
catches ``CancelledError``, so an in-flight model call is abandoned at once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from session_service import metrics
from session_service.agents.base import AgentContext, Outcome, Step
from session_service.agents.llm_config import LlmConfig
from session_service.agents.plan import DEFAULT_AGENT_NAMES
from session_service.agents.tools import ToolSpec, functions, result_for_model, tool_specs

log = logging.getLogger("aip.session.llm")

SYSTEM_PROMPT = (
    "You operate a {platform} computer for a user through the tools given, one step at a "
    "time: call a tool, read its result, then decide the next step. Tool results may "
    "include screenshots. When the task is done, or cannot be done, answer in plain text "
    "without calling a tool: that answer ends the task."
)


#: What replaces the images of an earlier step in the conversation.
IMAGES_DROPPED = "[The images of an earlier step were removed; the latest ones follow later.]"


@dataclass(slots=True)
class ToolAnswer:
    """What one tool call gave the model: the tool message's text, and its images."""

    text: str
    images: list[str]


def _call_id() -> str:
    return uuid.uuid4().hex[:12]


def describe_error(exc: openai.OpenAIError, config: LlmConfig) -> str:
    """The cause of a failed model call, for the session's error. An endpoint's message
    is its own text: should it echo the key, the key is masked."""
    retries = f" (after {config.max_retries} retries)" if config.max_retries else ""
    if isinstance(exc, openai.APITimeoutError):
        return f"the model did not answer within {config.timeout:g}s{retries}"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the model endpoint {config.base_url}{retries}"
    if isinstance(exc, openai.APIStatusError):
        text = f"the model endpoint answered HTTP {exc.status_code}{retries}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.replace(config.api_key, "***") if config.api_key else text


def _turn(seq: int, model: str, completion: Any) -> dict[str, Any]:
    choice = completion.choices[0]
    message = choice.message
    calls = [
        {"id": call.id, "name": call.function.name, "arguments": call.function.arguments}
        for call in message.tool_calls or []
        if getattr(call, "function", None)
    ]
    usage = completion.usage
    return {
        "seq": seq,
        "at": time.time(),
        "model": completion.model or model,
        "text": message.content or "",
        "refusal": message.refusal or "",
        "tool_calls": calls,
        "finish_reason": choice.finish_reason or "",
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
        },
    }


class LlmAgent:
    """Runs a natural-language request with a model and the device's tools."""

    name = "llm"

    async def run(self, context: AgentContext) -> Outcome:
        config = context.llm
        if config is None:
            return Outcome(
                None,
                "The llm agent is not configured on this replica "
                "(it needs --llm-base-url and --llm-model).",
            )
        agent_name = DEFAULT_AGENT_NAMES.get(context.platform.lower())
        specs, problem = await self._list_tools(context, agent_name)
        if problem is not None:
            return Outcome({"steps": 0}, problem)
        client = AsyncOpenAI(
            api_key=config.api_key or "none",
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
        )
        try:
            return await _Loop(context, config, client, specs).run()
        finally:
            await client.close()

    @staticmethod
    async def _list_tools(
        context: AgentContext, agent_name: str | None
    ) -> tuple[list[ToolSpec], str | None]:
        """The device's tools, or why they could not be had."""
        asked = ("action", "data_collection")
        step = Step(
            actions=[
                {
                    "tool_name": "list_tools",
                    "parameters": {"tool_type": kind},
                    "tool_type": "action",
                    "call_id": _call_id(),
                }
                for kind in asked
            ],
            agent_name=agent_name,
        )
        results = await context.run_step(step)
        descriptors: list[tuple[str, Any]] = []
        errors = []
        for kind, result in zip(asked, results, strict=False):
            listed = result.get("result") if isinstance(result, dict) else None
            if (
                isinstance(result, dict)
                and result.get("status") == "success"
                and isinstance(listed, list)
            ):
                descriptors.extend((kind, item) for item in listed)
            else:
                error = result.get("error") if isinstance(result, dict) else None
                errors.append(f"{kind}: {error or 'no tool list'}")
        if not descriptors and errors:
            return [], f"The device did not list its tools ({'; '.join(errors)})."
        specs = tool_specs(descriptors, agent_name)
        log.info(
            "session %s: the device offers %d tool(s): %s",
            context.session_id,
            len(specs),
            ", ".join(spec.tool_name for spec in specs),
        )
        return specs, None


class _Loop:
    """One conversation with the model, until it answers or a bound is hit."""

    def __init__(
        self, context: AgentContext, config: LlmConfig, client: AsyncOpenAI, specs: list[ToolSpec]
    ) -> None:
        self.context = context
        self.config = config
        self.client = client
        self.model = context.model or config.model
        self.by_name = {spec.function_name: spec for spec in specs}
        self.tools = functions(specs)
        self.steps = 0
        #: Where the latest images are in ``messages`` (``None``: none yet).
        self._images_at: int | None = None
        self.messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": SYSTEM_PROMPT.format(platform=context.platform or "desktop"),
            },
            {"role": "user", "content": context.request},
        ]

    async def run(self) -> Outcome:
        turns = 0
        while True:
            began, outcome = time.monotonic(), "cancelled"
            try:
                # The messages and tools are plain JSON dicts of the documented shapes;
                # the client's TypedDict unions cannot be inferred from them.
                completion = await self.client.chat.completions.create(
                    model=self.model,
                    messages=self.messages,  # type: ignore[arg-type]
                    tools=self.tools or openai.omit,  # type: ignore[arg-type]
                )
                outcome = "answered"
            except openai.OpenAIError as exc:
                outcome = "failed"
                return self._failed(f"The model call failed: {describe_error(exc, self.config)}.")
            finally:
                metrics.MODEL_CALL_SECONDS.labels(outcome).observe(time.monotonic() - began)
            if not completion.choices:
                return self._failed("The model returned no choice.")
            turn = _turn(turns, self.model, completion)
            turns += 1
            self.context.record_turn(turn)
            log.info(
                "session %s: model turn %d: %s",
                self.context.session_id,
                turn["seq"],
                ", ".join(call["name"] for call in turn["tool_calls"]) or "answered",
            )
            message = completion.choices[0].message
            if message.refusal:
                return self._failed(f"The model refused the task: {message.refusal}")
            if not turn["tool_calls"]:
                return Outcome({"answer": message.content or "", "steps": self.steps})
            self.messages.append(
                {
                    "role": "assistant",
                    "content": message.content,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": call["arguments"]},
                        }
                        for call in turn["tool_calls"]
                    ],
                }
            )
            images: list[str] = []
            for call in turn["tool_calls"]:
                if self.steps >= self.config.max_steps:
                    return self._failed(
                        f"The model did not finish within "
                        f"{self.config.max_steps} steps (--llm-max-steps)."
                    )
                self.steps += 1
                answer = await self._run_call(call["name"], call["arguments"])
                self.messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": answer.text}
                )
                images.extend(answer.images)
            if images:
                self._show_images(images)

    def _show_images(self, images: list[str]) -> None:
        """Tool messages carry text only: the step's images follow as a user message.
        Only the latest step's images stay in the conversation (screenshots are large,
        and every call sends the whole conversation again); older ones become a note."""
        if self._images_at is not None:
            self.messages[self._images_at] = {"role": "user", "content": IMAGES_DROPPED}
        self._images_at = len(self.messages)
        self.messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "The images of the tool results above:"},
                    *({"type": "image_url", "image_url": {"url": url}} for url in images),
                ],
            }
        )

    def _failed(self, error: str) -> Outcome:
        return Outcome({"steps": self.steps}, error)

    async def _run_call(self, name: str, arguments: str) -> ToolAnswer:
        """One tool call of the model as one command; a bad call is answered as a tool
        error for the model to correct, not run."""
        spec = self.by_name.get(name)
        if spec is None:
            known = ", ".join(self.by_name) or "none"
            return ToolAnswer(f"Error: there is no tool named {name!r} (tools: {known}).", [])
        try:
            parameters = json.loads(arguments or "{}")
        except ValueError as exc:
            return ToolAnswer(
                f"Error: the arguments are not valid JSON ({exc}); call "
                f"{name} again with a JSON object.",
                [],
            )
        if not isinstance(parameters, dict):
            return ToolAnswer(
                f"Error: the arguments must be a JSON object, not {type(parameters).__name__}.", []
            )
        step = Step(
            actions=[
                {
                    "tool_name": spec.tool_name,
                    "parameters": parameters,
                    "tool_type": spec.tool_type,
                    "call_id": _call_id(),
                }
            ],
            agent_name=spec.agent_name,
        )
        results = await self.context.run_step(step)
        text, images = result_for_model(results, self.config.max_result_chars)
        return ToolAnswer(text, images)
