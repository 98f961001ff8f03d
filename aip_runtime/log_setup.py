"""The services' log output: one handler on stderr, in ``--log-format`` text or JSON.

Text lines are for people: ``TIME LEVEL LOGGER: MESSAGE`` and, when a session, client or
device is bound (:mod:`aip_runtime.log_context`), `` [session_id=... client_id=...]``.
JSON lines are for log collectors: one object per line with ``timestamp`` (UTC, ISO
8601), ``level``, ``logger``, ``message``, the process's fixed fields (``service`` and
its ``gateway_id`` or ``replica_id``), the bound ids, and ``exc_info`` with a traceback;
so a collector can select one session's lines across replicas and gateways without
parsing text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from aip_runtime.cli import LogFormat
from aip_runtime.log_context import ContextFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(log_context)s"

#: Record attributes never copied into a JSON line: the standard ones (written under
#: their own keys or not at all), uvicorn's coloured copy of its message, and the text
#: form of the bound ids (which are written as fields of their own).
_NOT_EXTRA = [*RESERVED_ATTRS, "color_message", "log_context"]

#: Marks the handler installed here, so that configuring again replaces it.
_MARK = "_aip_log_handler"


class _JsonLines(JsonFormatter):
    """python-json-logger's formatter with the timestamp as the first key, in UTC."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["timestamp"] = moment.isoformat(timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)


def formatter(
    log_format: LogFormat, service: str, fields: Mapping[str, str] | None = None
) -> logging.Formatter:
    """The formatter of ``log_format``; ``service`` and ``fields`` go on every JSON line."""
    if log_format is LogFormat.JSON:
        return _JsonLines(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": service, **(fields or {})},
            reserved_attrs=_NOT_EXTRA,
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(
    level: str,
    log_format: LogFormat,
    *,
    service: str,
    fields: Mapping[str, str] | None = None,
    adopt: Sequence[str] = (),
) -> logging.Handler:
    """Log at ``level`` and above to stderr in ``log_format``, through one handler on the
    root logger (replacing the one an earlier call installed, leaving others alone).

    ``adopt`` names loggers with handlers of their own (uvicorn's): in JSON they lose
    those and propagate to the root instead, so that every line of the process is JSON;
    in text they keep their own format. One without handlers is left as it is (uvicorn
    silences its access log so: no handler, no propagation).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(log_format, service, fields))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [old for old in root.handlers if getattr(old, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if log_format is LogFormat.JSON:
        for name in adopt:
            logger = logging.getLogger(name)
            if not logger.handlers:  # silenced (uvicorn's access log when off), or unset
                continue
            for own in list(logger.handlers):
                logger.removeHandler(own)
            logger.propagate = True
    return handler
