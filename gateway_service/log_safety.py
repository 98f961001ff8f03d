"""What may reach a log line or an error frame: no secret, no forged line, no flood.

- :func:`redact` blanks credentials in text that may hold a URL or a header
  (``?token=...``, ``Authorization: Bearer ...``): uvicorn logs the request path with its
  query, and reference clients put their token there.
- :func:`clip` makes a client-supplied string safe to quote: control characters escaped
  (a ``\\n`` in a ``client_id`` cannot start a forged log line) and cut to a length with a
  marker saying how much was left out.
- :class:`SafeLogFilter` applies both to every record a handler writes.
"""

from __future__ import annotations

import logging
import re

#: Longest client-supplied string quoted in a log line or an error frame.
CLIENT_TEXT_LIMIT = 200
#: Longest message a log record may carry (tracebacks excluded).
MESSAGE_LIMIT = 4000
REDACTED = "[redacted]"

_QUERY_SECRET = re.compile(r"(?i)([?&;](?:token|auth_token|access_token|api_key|key)=)[^&\s\"'#]*")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def redact(text: str) -> str:
    """``text`` with the values of credential query parameters and bearer tokens blanked."""
    if "=" not in text and "earer" not in text:
        return text
    return _BEARER.sub(r"\1" + REDACTED, _QUERY_SECRET.sub(r"\1" + REDACTED, text))


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
        char, f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape_controls(text: str) -> str:
    """``text`` with control characters (line breaks included) written as escapes."""
    return _CONTROL.sub(_escape, text)


def clip(text: object, limit: int = CLIENT_TEXT_LIMIT) -> str:
    """A client-supplied value, safe to quote: escaped, redacted, at most ``limit``
    characters of it kept, then ``...[N more chars]`` when cut."""
    value = text if isinstance(text, str) else str(text)
    cut = len(value) - limit
    if cut > 0:
        value = value[:limit]
    value = redact(escape_controls(value))
    return f"{value}...[{cut} more chars]" if cut > 0 else value


class SafeLogFilter(logging.Filter):
    """Rewrites each record's message: redacted, control characters escaped, cut to
    :data:`MESSAGE_LIMIT`. Installed on handlers, it covers every logger that reaches
    them; it never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        record.msg = clip(message, MESSAGE_LIMIT)
        record.args = None
        return True


_FILTER = SafeLogFilter()
#: Loggers whose handlers get the filter: the root and uvicorn's own (which do not
#: propagate).
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def install() -> None:
    """Put the filter on the handlers (and loggers) of :data:`LOGGERS`; idempotent."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
