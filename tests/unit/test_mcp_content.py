"""Device results as MCP content: text, JSON, images out of data URLs, failures as tool
errors."""

from __future__ import annotations

import json

from mcp_types import ImageContent, TextContent

from gateway_service.mcp import content

PNG = "data:image/png;base64,iVBORw0KGgo="
JPEG = "data:image/jpeg;base64,/9j/4AAQ"


def texts(result: object) -> list[str]:
    return [block.text for block in result.content  # type: ignore[attr-defined]
            if isinstance(block, TextContent)]


def images(result: object) -> list[ImageContent]:
    return [block for block in result.content  # type: ignore[attr-defined]
            if isinstance(block, ImageContent)]


def test_image_of() -> None:
    image = content.image_of(PNG)
    assert image is not None and image.mime_type == "image/png"
    assert image.data == "iVBORw0KGgo="
    assert content.image_of("data:text/plain;base64,aGk=") is None
    assert content.image_of("see data:image/png;base64,xx") is None
    assert content.image_of("hello") is None


def test_a_string_is_text_and_an_object_is_json_and_structured() -> None:
    text = content.success("hello")
    assert texts(text) == ["hello"] and text.structured_content is None
    assert not text.is_error
    number = content.success(42)
    assert texts(number) == ["42"]
    obj = content.success({"a": [1, 2]})
    assert json.loads(texts(obj)[0]) == {"a": [1, 2]}
    assert obj.structured_content == {"a": [1, 2]}
    assert texts(content.success(None)) == ["null"]


def test_a_data_url_is_an_image_and_nested_ones_leave_a_marker() -> None:
    alone = content.success(PNG)
    assert texts(alone) == [] and [i.mime_type for i in images(alone)] == ["image/png"]
    nested = content.success({"screen": PNG, "thumbs": [JPEG, "x"]})
    assert json.loads(texts(nested)[0]) == {"screen": "<image 1>",
                                            "thumbs": ["<image 2>", "x"]}
    assert [i.mime_type for i in images(nested)] == ["image/png", "image/jpeg"]
    assert nested.structured_content is None  # images are not structured content


def test_images_past_the_cap_are_named_not_sent() -> None:
    many = content.success([PNG] * (content.MAX_IMAGES + 2))
    assert len(images(many)) == content.MAX_IMAGES
    assert json.loads(texts(many)[0])[-1] == "<image left out>"


def test_action_results() -> None:
    ok = content.action_result({"status": "success", "result": {"x": 1}, "error": None})
    assert not ok.is_error and ok.structured_content == {"x": 1}
    failed = content.action_result({"status": "failure", "result": {"why": "policy"},
                                    "error": "not today"})
    assert failed.is_error
    assert texts(failed)[0] == "not today"
    assert json.loads(texts(failed)[1]) == {"why": "policy"}
    bare = content.action_result({"status": "failure", "error": None})
    assert bare.is_error and texts(bare) == ["The device reported failure."]
    skipped = content.action_result({"status": "skipped"})
    assert skipped.is_error and "skipped" in texts(skipped)[0]
    assert content.action_result("what").is_error
    assert not content.action_result({"status": "none", "result": "x"}).is_error
