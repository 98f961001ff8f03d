"""The pure parts of the llm agent: tool names, images and truncation of results, the
choice of agent, StartSession's admission and the key's handling in the settings."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest

from aip_grpc import session_api_pb2 as pb
from session_service.agents.llm import describe_error
from session_service.agents.llm_config import LlmConfig
from session_service.agents.selection import AgentChoiceError, select_agent
from session_service.agents.tools import (
    MAX_IMAGES,
    function_name,
    functions,
    result_for_model,
    split_images,
    tool_specs,
    truncate,
)
from session_service.api_servicer import admission_problems
from session_service.settings import SessionSettings

VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
IMAGE = "data:image/png;base64,AAAA"
PLAN = '[{"tool_name": "ls"}]'


def descriptor(name: str, namespace: str | None = None, **fields: object) -> dict[str, object]:
    return {"tool_name": name, "namespace": namespace, **fields}


def test_function_names_are_valid_and_cut_to_64() -> None:
    assert function_name("screen.capture") == "screen_capture"
    assert function_name("a b/c:d") == "a_b_c_d"
    assert function_name("") == "tool"
    assert len(function_name("x" * 100)) == 64


def test_clashing_names_stay_unique_and_map_back_exactly() -> None:
    specs = tool_specs(
        [
            ("action", descriptor("click", "ui")),
            ("action", descriptor("click", "web")),
            ("action", descriptor("cl.ick", "ui")),
            ("action", descriptor("x" * 70, "a")),
            ("action", descriptor("x" * 70 + "y", "a")),
        ],
        "LinuxAgent",
    )
    names = [spec.function_name for spec in specs]
    assert len(set(names)) == len(names) == 5
    assert all(VALID.match(name) for name in names)
    assert names[:2] == ["click", "web__click"]
    assert [spec.tool_name for spec in specs][:3] == ["click", "click", "cl.ick"]
    assert {spec.agent_name for spec in specs} == {"LinuxAgent"}


def test_repeats_and_nameless_descriptors_are_skipped() -> None:
    specs = tool_specs(
        [
            ("action", descriptor("click", "ui")),
            ("action", descriptor("click", "ui")),
            ("action", {"namespace": "ui"}),
            ("action", "not a descriptor"),
            ("data_collection", descriptor("shot", "s")),
        ],
        None,
    )
    assert [(s.tool_name, s.tool_type) for s in specs] == [
        ("click", "action"),
        ("shot", "data_collection"),
    ]


def test_functions_carry_schema_and_description() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    specs = tool_specs(
        [
            ("action", descriptor("click", input_schema=schema, description="Click.")),
            ("action", descriptor("odd", input_schema={"type": "string"})),
        ],
        None,
    )
    click, odd = functions(specs)
    assert click["function"] == {"name": "click", "description": "Click.", "parameters": schema}
    assert odd["function"]["parameters"] == {"type": "object", "properties": {}}
    assert odd["function"]["description"]


def test_images_anywhere_are_taken_out_of_the_text() -> None:
    value = {"shots": [IMAGE, {"inner": "data:image/jpeg;base64,BBBB"}], "text": "data: x"}
    text, images = split_images(value)
    assert images == [IMAGE, "data:image/jpeg;base64,BBBB"]
    assert "base64" not in str(text) and text["text"] == "data: x"


def test_images_beyond_the_bound_are_only_mentioned() -> None:
    text, images = split_images([IMAGE] * (MAX_IMAGES + 2))
    assert len(images) == MAX_IMAGES
    assert "left out" in text[-1]


def test_truncation_says_how_much_was_cut() -> None:
    assert truncate("abc", 3) == "abc"
    cut = truncate("a" * 500, 100)
    assert cut.startswith("a" * 100) and "400 of 500 characters not shown" in cut


def test_result_for_model_is_text_within_budget_and_images() -> None:
    results = [
        {
            "status": "success",
            "error": None,
            "result": {"s": IMAGE, "log": "z" * 500},
            "call_id": "c1",
            "namespace": None,
        }
    ]
    text, images = result_for_model(results, 200)
    assert images == [IMAGE]
    assert "base64" not in text and "truncated" in text and len(text) < 300
    assert "call_id" not in text
    text, images = result_for_model([], 200)
    assert "no result" in text and images == []


def test_a_plan_runs_the_plan_agent_and_any_other_request_the_llm() -> None:
    assert select_agent(PLAN, llm_configured=True) == "plan"
    assert select_agent("Open the editor", llm_configured=True) == "llm"
    assert select_agent("Open the editor", llm_configured=False) == "plan"
    assert select_agent(PLAN, "llm", llm_configured=True) == "llm"
    assert select_agent("Open the editor", "plan", llm_configured=True) == "plan"


def test_a_named_agent_is_checked() -> None:
    with pytest.raises(AgentChoiceError, match="unknown agent"):
        select_agent(PLAN, "magic", llm_configured=True)
    with pytest.raises(AgentChoiceError, match="--llm-base-url"):
        select_agent("hello", "llm", llm_configured=False)


def _fields(request: pb.StartSessionRequest, llm: bool) -> list[str]:
    return [name for name, _ in admission_problems(request, llm)]


def test_admission_refuses_a_non_plan_only_without_a_model() -> None:
    words = pb.StartSessionRequest(device_id="d", request="Open the editor")
    assert _fields(words, False) == ["request"]
    assert _fields(words, True) == []
    assert _fields(pb.StartSessionRequest(device_id="d", request=PLAN), False) == []
    named = pb.StartSessionRequest(device_id="d", request="hi", agent="plan")
    assert _fields(named, True) == ["request"]
    assert _fields(pb.StartSessionRequest(device_id="d", request="hi", agent="x"), True) == [
        "agent"
    ]
    assert _fields(pb.StartSessionRequest(device_id="d", request="hi", model="m"), True) == []
    assert _fields(pb.StartSessionRequest(device_id="d", request=PLAN, model="m"), True) == [
        "model"
    ]
    assert _fields(pb.StartSessionRequest(device_id="d", request=" ", agent="llm"), True) == [
        "request"
    ]


def test_the_key_is_secret_and_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-from-file\n")
    settings = SessionSettings(
        llm_base_url="http://127.0.0.1:1/v1", llm_model="m", llm_api_key_file=path
    )
    assert settings.llm is not None and settings.llm.api_key == "sk-from-file"
    assert "sk-from-file" not in repr(settings) and "sk-from-file" not in repr(settings.llm)
    assert SessionSettings().llm is None
    with pytest.raises(ValueError, match="go together"):
        SessionSettings(llm_base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="exclusive"):
        SessionSettings(llm_base_url="u", llm_model="m", llm_api_key="a", llm_api_key_file=path)


def test_a_failed_call_is_described_without_the_key() -> None:
    config = LlmConfig(
        base_url="http://127.0.0.1:1/v1",
        model="m",
        api_key="sk-secret-1",
        timeout=2.5,
        max_retries=1,
    )
    text = describe_error(openai.OpenAIError("bad key sk-secret-1 given"), config)
    assert "sk-secret-1" not in text and "***" in text
    assert "sk-secret-1" not in repr(config)


def test_the_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        SessionSettings(llm_base_url="127.0.0.1:8000", llm_model="m")
