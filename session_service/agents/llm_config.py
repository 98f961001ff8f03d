"""How the language-model agent reaches its model (``--llm-*`` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """An OpenAI-compatible Chat Completions endpoint and the agent's bounds.

    ``api_key`` is kept out of ``repr`` so that no log of this object shows it.
    """

    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    max_steps: int = 30
    timeout: float = 60.0
    max_retries: int = 2
    max_result_chars: int = 20000
