"""ListSessions' paging and StartSession's idempotency keys, without a server."""

from __future__ import annotations

import pytest

from session_service.api_errors import ApiError
from session_service.api_pages import Filters, IdempotencyKeys, Row, page_size, select_page


def row(n: int, created_at: float, **fields: str) -> Row:
    values = {"device_id": "d", "state": "running", "requester_id": "r", "task_name": "t"}
    values.update(fields)
    return Row(f"s{n:02}", created_at, values["device_id"], values["state"],
               values["requester_id"], values["task_name"])


def test_pages_cover_every_row_once_in_a_stable_order_even_on_equal_times() -> None:
    rows = [row(n, float(n // 3)) for n in range(20)]  # three sessions per instant
    seen, token = [], ""
    while True:
        page, token = select_page(rows, Filters(), token, 7)
        seen += page
        if not token:
            break
    assert len(seen) == 20 and len({r.session_id for r in seen}) == 20
    assert [r.key() for r in seen] == sorted((r.key() for r in rows), reverse=True)


def test_a_page_with_no_more_after_it_has_no_token() -> None:
    page, token = select_page([row(1, 1.0), row(2, 2.0)], Filters(), "", 2)
    assert [r.session_id for r in page] == ["s02", "s01"] and token == ""


def test_filters_are_all_applied() -> None:
    rows = [row(1, 1.0), row(2, 2.0, device_id="e"), row(3, 3.0, state="failed"),
            row(4, 4.0, requester_id="q"), row(5, 5.0, task_name="u")]
    page, _ = select_page(rows, Filters(device_id="d", state="running", requester_id="r",
                                        task_name="t"), "", 10)
    assert [r.session_id for r in page] == ["s01"]


def test_a_token_only_works_with_its_own_filters() -> None:
    rows = [row(n, float(n)) for n in range(5)]
    _, token = select_page(rows, Filters(device_id="d"), "", 2)
    with pytest.raises(ApiError) as error:
        select_page(rows, Filters(device_id="e"), token, 2)
    assert error.value.violations[0][0] == "page_token"
    with pytest.raises(ApiError):
        select_page(rows, Filters(), "%%%", 2)


def test_page_size_defaults_and_caps() -> None:
    assert (page_size(0), page_size(5), page_size(5000)) == (100, 5, 1000)


def test_idempotency_keys_are_per_requester_and_bounded() -> None:
    keys = IdempotencyKeys(capacity=2)
    keys.put("a", "k", "s1")
    keys.put("b", "k", "s2")
    assert (keys.get("a", "k"), keys.get("b", "k"), keys.get("a", "")) == ("s1", "s2", None)
    keys.put("a", "k2", "s3")  # the oldest key goes
    assert keys.get("a", "k") is None and keys.get("a", "k2") == "s3"
    keys.forget("a", "k2", "other")  # only the session the key names
    assert keys.get("a", "k2") == "s3"
    keys.forget("a", "k2", "s3")
    assert keys.get("a", "k2") is None
