"""aip_wire.frames.load_json: one reading of JSON whatever the document's size."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from aip_wire.frames import LARGE_DOCUMENT, load_json

#: A string that takes a document past the size where the parser changes.
PAD = "QUJD" * (LARGE_DOCUMENT // 4)

DOCUMENTS: list[Any] = [
    {"type": "command_results", "action_results": [{"status": "success", "result": 1.5}]},
    [2**70, -(2**80), 0.1, 1e300, True, None, "é ✓ \u0000"],
    {"a": {"b": [[], {}, ""]}, "escaped": "line\nbreak \"quoted\" \\ slash"},
]


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("pad", ["", PAD], ids=["small", "large"])
def test_small_and_large_documents_read_as_the_standard_library_reads_them(
    document: Any, pad: str
) -> None:
    data = json.dumps({"pad": pad, "doc": document}).encode()
    assert (len(data) >= LARGE_DOCUMENT) == bool(pad)
    assert load_json(data) == json.loads(data)


@pytest.mark.parametrize("pad", ["", PAD], ids=["small", "large"])
def test_what_the_fast_parsers_refuse_the_standard_library_decides(pad: str) -> None:
    # A lone surrogate and NaN: refused by both fast parsers, read by the standard one.
    value = load_json(f'{{"pad": "{pad}", "s": "\\ud800", "n": NaN}}'.encode())
    assert value["s"] == "\ud800" and math.isnan(value["n"])


@pytest.mark.parametrize("data", [b"", b"{", b'{"a": 1,}', b"[1] [2]", b"\xff",
                                  b"[" * 100_000 + b"]" * 100_000])
def test_what_is_not_json_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        load_json(data)
    with pytest.raises(ValueError):
        load_json(data + b" " * LARGE_DOCUMENT)
