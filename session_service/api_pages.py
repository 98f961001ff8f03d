"""What ListSessions selects and how it pages, and StartSession's idempotency keys.

With a session store (every replica shares one), the store pages by itself: keyset
pagination newest first (``created_at`` then ``session_id``, both descending; see
:func:`session_service.store_reads.page`). The API wraps the store's cursor in a token
that also holds a digest of the filters it was made for, so a token that comes back with
other filters is refused rather than silently paging something else. A replica without a
store pages its memory the same way with :func:`select_page`.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from session_service import store_reads
from session_service.api_errors import invalid

#: ListSessions' page size when none is asked, and the largest it gives.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Filters:
    """ListSessions' filters; an empty one matches everything."""

    device_id: str = ""
    state: str = ""  # a SessionState value, or "" for any
    requester_id: str = ""
    task_name: str = ""
    replica_id: str = ""

    def digest(self) -> str:
        text = orjson.dumps([self.device_id, self.state, self.requester_id, self.task_name,
                             self.replica_id])
        return hashlib.sha256(text).hexdigest()[:16]

    def stored(self) -> store_reads.Filters:
        """The same filters, as the store takes them."""
        return store_reads.Filters(self.device_id, self.state, self.requester_id,
                                   self.task_name, self.replica_id)


@dataclass(frozen=True, slots=True)
class Row:
    """What :func:`select_page` needs of one session, live or stored."""

    session_id: str
    created_at: float
    device_id: str
    state: str
    requester_id: str
    task_name: str
    replica_id: str = ""

    def key(self) -> tuple[float, str]:
        return (self.created_at, self.session_id)


def page_size(asked: int) -> int:
    return min(asked or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last: Row, filters: Filters) -> str:
    text = orjson.dumps({"c": last.created_at, "s": last.session_id, "f": filters.digest()})
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_token(token: str, filters: Filters) -> tuple[float, str] | None:
    """The sort key to read on after; ``None`` for no token.

    :raises api_errors.ApiError: the token is not one of ours, or was made for other filters.
    """
    if not token:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = (float(data["c"]), str(data["s"]))
        digest = data["f"]
    except (ValueError, KeyError, TypeError):
        raise invalid([("page_token", "not a token this API gave")]) from None
    if digest != filters.digest():
        raise invalid([("page_token", "given with other filters than its page")])
    return after


def matches(row: Row, filters: Filters) -> bool:
    return ((not filters.device_id or row.device_id == filters.device_id)
            and (not filters.state or row.state == filters.state)
            and (not filters.requester_id or row.requester_id == filters.requester_id)
            and (not filters.task_name or row.task_name == filters.task_name)
            and (not filters.replica_id or row.replica_id == filters.replica_id))


def wrap_token(store_token: str, filters: Filters) -> str:
    """The API's token for the store's cursor ``store_token`` (``""`` stays ``""``)."""
    if not store_token:
        return ""
    text = orjson.dumps({"t": store_token, "f": filters.digest()})
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def unwrap_token(token: str, filters: Filters) -> str:
    """The store's cursor inside an API token (``""`` for none).

    :raises api_errors.ApiError: the token is not one of ours, or was made for other filters.
    """
    if not token:
        return ""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        store_token, digest = str(data["t"]), data["f"]
        store_reads.decode_token(store_token)
    except (ValueError, KeyError, TypeError):
        raise invalid([("page_token", "not a token this API gave")]) from None
    if digest != filters.digest():
        raise invalid([("page_token", "given with other filters than its page")])
    return store_token


def select_page(rows: Iterable[Row], filters: Filters, token: str,
                size: int) -> tuple[list[Row], str]:
    """One page of the matching rows, newest first, and the token of the next page
    (empty on the last). ``rows`` may hold a session once only.

    :raises api_errors.ApiError: a bad page token.
    """
    after = decode_token(token, filters)
    selected = [row for row in rows if matches(row, filters)
                and (after is None or row.key() < after)]
    selected.sort(key=Row.key, reverse=True)
    page = selected[:size]
    more = len(selected) > size
    return page, encode_token(page[-1], filters) if more and page else ""


#: Largest accepted idempotency key.
MAX_KEY_LENGTH = 128


class IdempotencyKeys:
    """Which session each (requester, key) started, for the latest ``capacity`` keys.

    The store is the arbiter across replicas and restarts (the key is part of the
    session's record, unique per requester); this memory answers a retry that arrives
    on the same replica before the first session's record is written.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._sessions: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, requester_id: str, key: str) -> str | None:
        return self._sessions.get((requester_id, key)) if key else None

    def put(self, requester_id: str, key: str, session_id: str) -> None:
        if not key:
            return
        self._sessions[(requester_id, key)] = session_id
        self._sessions.move_to_end((requester_id, key))
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)

    def forget(self, requester_id: str, key: str, session_id: str) -> None:
        """Drop the key of a session that was refused after all, so a retry starts it."""
        if key and self._sessions.get((requester_id, key)) == session_id:
            del self._sessions[(requester_id, key)]
