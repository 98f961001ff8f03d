"""Keeping device logs safe to share: no credentials, no raw server text.

:func:`redact` hides the value of every credential parameter in a URL or any text that
holds one (``?token=...`` is how reference clients authenticate, so the URL a device
connects to is a secret). :func:`server_text` makes text a server chose harmless in a
log line: control characters escaped (no forged lines, no terminal escapes) and cut to a
bounded length. :class:`RedactingFilter` applies :func:`redact` to every record.
"""

from __future__ import annotations

import logging
import re

#: Query parameters whose values are credentials.
SECRET_PARAMETERS = ("token", "access_token", "auth_token", "api_key", "apikey", "password")

_SECRET = re.compile(r"(?i)(\b(?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&#\s'\"<>]+")
MASK = "***"
SERVER_TEXT_LIMIT = 300


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` (and similar) parameter masked."""
    return _SECRET.sub(lambda match: match.group(1) + MASK, text)


def server_text(value: object, limit: int = SERVER_TEXT_LIMIT) -> str:
    """``value`` as one safe log fragment: non-printable characters escaped, at most
    ``limit`` characters kept (the cut says how many were left out), secrets masked."""
    text = value if isinstance(value, str) else repr(value)
    escaped = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    if len(escaped) > limit:
        escaped = f"{escaped[:limit]}... ({len(escaped) - limit} more characters)"
    return redact(escaped)


class RedactingFilter(logging.Filter):
    """Masks credentials in every record it sees (message and exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
