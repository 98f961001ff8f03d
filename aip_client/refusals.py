"""Which connection failures a device must not retry: pure rules, no sockets.

Retrying helps when the server is restarting or the network is down; it cannot help
when the URL names no WebSocket endpoint, the credentials are wrong, or another live
connection holds the ``client_id``. Those end the device with a message saying what to
fix, each with its own exit code.
"""

from __future__ import annotations

from enum import IntEnum
from urllib.parse import urlsplit

from aip_wire.vocab import CloseCode


class RefusalKind(IntEnum):
    """A permanent refusal; the value is ``aip-device``'s exit code for it."""

    BAD_URL = 3
    UNAUTHORIZED = 4
    ID_IN_USE = 5


class PermanentRefusal(Exception):
    """The server refused this device for a reason that retrying cannot fix."""

    def __init__(self, kind: RefusalKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _path_hint(url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    return "" if path.endswith("/ws") else f" (the URL's path is '{path or '/'}': is the path /ws?)"


def judge_http_status(status: int, url: str) -> PermanentRefusal | None:
    """The refusal an HTTP answer to the WebSocket upgrade means, ``None`` if transient.

    A server answers a path it has no WebSocket for with 403 or 404, so both suggest the
    path before the credentials.
    """
    hint = _path_hint(url)
    if status in (403, 404) and hint:
        return PermanentRefusal(
            RefusalKind.BAD_URL, f"the server answered HTTP {status} to {url}{hint}"
        )
    if status in (401, 403):
        return PermanentRefusal(
            RefusalKind.UNAUTHORIZED,
            f"the server rejected the credentials (HTTP {status}); check --token",
        )
    if 400 <= status < 500 and status not in (408, 429):
        return PermanentRefusal(
            RefusalKind.BAD_URL, f"the server answered HTTP {status} to {url}{hint}"
        )
    return None


def judge_close(
    code: int | None, reason: str = "", *, registered_before: bool = False
) -> PermanentRefusal | None:
    """The refusal a close code means, ``None`` for one worth retrying (1006, 1011,
    1012, 1013, 4000 taken over, 4408 too slow to register...).

    4409 (the ``client_id`` held by another live connection) is final only for a device
    that never registered: after a drop, the holder may be its own previous connection,
    which the server has not noticed is gone yet, so a reconnecting device tries again.
    """
    detail = f": {reason}" if reason else ""
    if code == CloseCode.UNAUTHORIZED:
        return PermanentRefusal(
            RefusalKind.UNAUTHORIZED,
            f"bad credentials (close code 4401{detail}); check --token "
            "and that the gateway's tokens file has this client_id as "
            "a device",
        )
    if code == CloseCode.DUPLICATE and not registered_before:
        return PermanentRefusal(
            RefusalKind.ID_IN_USE,
            f"another live connection holds this client_id (close code "
            f"4409{detail}); stop it or choose another --id",
        )
    return None
