"""Who a log line is about: the session, client and device being served, from contextvars.

A socket's task (gateway) or a task submission (session service) binds the ids it
serves once; every line logged under it then carries them, through :class:`ContextFilter`,
without each call site repeating them. Context variables follow asyncio tasks: a task
created while ids are bound keeps them, and binding in one connection's task never leaks
into another's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

#: The contextual fields, in the order text lines show them.
FIELDS = ("session_id", "client_id", "device_id")

#: Longest value copied onto a record; ids come from clients, which may send anything.
VALUE_LIMIT = 200

_VARS: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"aip_log_{name}", default=None) for name in FIELDS
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def bind(**fields: str | None) -> dict[str, Token[str | None]]:
    """Bind ``fields`` (``None`` values skipped) for the current task and the tasks it
    creates from now on; returns the tokens :func:`unbind` takes."""
    if extra := set(fields) - set(FIELDS):
        raise TypeError(f"unknown log context field(s) {sorted(extra)}; expected {FIELDS}")
    return {name: _VARS[name].set(value) for name, value in fields.items() if value is not None}


def unbind(tokens: dict[str, Token[str | None]]) -> None:
    """Restore what :func:`bind` replaced."""
    for name, token in tokens.items():
        _VARS[name].reset(token)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """``fields`` bound for the ``with`` block only (and for the tasks it creates)."""
    tokens = bind(**fields)
    try:
        yield
    finally:
        unbind(tokens)


def current() -> dict[str, str]:
    """The fields bound now, in :data:`FIELDS` order."""
    found: dict[str, str] = {}
    for name in FIELDS:
        value = _VARS[name].get()
        if value is not None:
            found[name] = value
    return found


def _safe(value: str) -> str:
    # A client_id with a line break must not start a forged line of its own.
    cut = len(value) - VALUE_LIMIT
    text = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", value[:VALUE_LIMIT])
    return f"{text}...[{cut} more chars]" if cut > 0 else text


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (as ``record.session_id`` and so on), and
    their text form onto ``record.log_context`` (`` [session_id=... client_id=...]`` or
    ``""``). A field the call site passed itself (``extra=``) is kept. Never drops a
    record."""

    def filter(self, record: logging.LogRecord) -> bool:
        shown: list[str] = []
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is None:
                bound_value = _VARS[name].get()
                if bound_value is None:
                    continue
                value = _safe(bound_value)
                setattr(record, name, value)
            shown.append(f"{name}={value}")
        record.log_context = f" [{' '.join(shown)}]" if shown else ""
        return True
