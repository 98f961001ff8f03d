"""What a device's results become in an MCP tool result.

Devices answer with JSON: text, objects, lists, and screenshots as ``data:image/...;
base64,...`` strings, possibly deep inside an object. An MCP client shows text and
images, so each such string becomes an :class:`ImageContent` and the JSON that held it
says ``<image N>`` in its place; the rest stays JSON text (or plain text, for a string),
and an object result is also given as structured content. A ``failure`` result, or a
session that did not complete, is a tool error (``isError``) carrying its message, so
that the model calling the tool reads why.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent

_DATA_URL = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+);base64,(.*)$", re.ASCII | re.DOTALL)
#: Most images of one result sent as images; any further ones are left out, named.
MAX_IMAGES = 8


def image_of(value: str) -> ImageContent | None:
    """The image a ``data:image/...;base64,`` string holds, else ``None``."""
    match = _DATA_URL.match(value)
    if match is None:
        return None
    mime, data = match.groups()
    return ImageContent(data=data, mime_type=mime)


def split_images(value: Any, images: list[ImageContent]) -> Any:
    """``value`` with each image string replaced by ``<image N>``; the images are
    appended to ``images`` (past :data:`MAX_IMAGES`, ``<image left out>``)."""
    if isinstance(value, str):
        image = image_of(value)
        if image is None:
            return value
        if len(images) >= MAX_IMAGES:
            return "<image left out>"
        images.append(image)
        return f"<image {len(images)}>"
    if isinstance(value, list):
        return [split_images(item, images) for item in value]
    if isinstance(value, dict):
        return {key: split_images(item, images) for key, item in value.items()}
    return value


def as_text(value: Any) -> str:
    """A string as it is; anything else as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def content_of(value: Any) -> tuple[list[ContentBlock], dict[str, Any] | None]:
    """The content blocks for a result value, and its structured form (objects only,
    without images: structured content must be a JSON object on the handshake versions)."""
    images: list[ImageContent] = []
    rest = split_images(value, images)
    blocks: list[ContentBlock] = []
    whole_image = isinstance(rest, str) and images and rest == "<image 1>"
    if not whole_image and rest is not None:
        blocks.append(TextContent(text=as_text(rest)))
    blocks.extend(images)
    structured = value if isinstance(value, dict) and not images else None
    return blocks, structured


def success(value: Any) -> CallToolResult:
    blocks, structured = content_of(value)
    if not blocks:
        blocks = [TextContent(text="null")]
    return CallToolResult(content=blocks, structured_content=structured)


def failure(message: str, value: Any = None) -> CallToolResult:
    """A tool error: the message first, then whatever result came with it."""
    blocks: list[ContentBlock] = [TextContent(text=message)]
    if value is not None:
        more, _ = content_of(value)
        blocks.extend(more)
    return CallToolResult(content=blocks, is_error=True)


def action_result(result: Any) -> CallToolResult:
    """One device result (``{"status", "result", "error", ...}``) as a tool result."""
    if not isinstance(result, dict):
        return failure("The device sent no result for the command.", result)
    status = result.get("status")
    value = result.get("result")
    if status == "failure":
        error = result.get("error")
        return failure(str(error) if error else "The device reported failure.", value)
    if status not in ("success", "none", None):
        return failure(f"The device reported '{status}' for the command.", value)
    return success(value)
