"""Incoming link messages to their handlers: one table per end of the link.

Each end builds an :class:`Inbound` from a mapping of message class to handler, and the
link's reader calls :meth:`Inbound.dispatch` with each decoded batch. A message with no
handler on this end is logged and skipped; a handler that raises is logged and does not
stop the batch or the link, since one bad message must not end every session on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("aip.link.dispatch")

#: A handler's return value, if any, is ignored.
Handler = Callable[[Any], object]


class Inbound:
    def __init__(self, handlers: Mapping[type, Handler], *, name: str = "link") -> None:
        self._handlers = dict(handlers)
        self._name = name

    def dispatch(self, batch: Iterable[Any]) -> None:
        handlers = self._handlers
        for message in batch:
            handler = handlers.get(type(message))
            if handler is None:
                log.warning("%s: no handler for %s; skipped", self._name,
                            type(message).__name__)
                continue
            try:
                handler(message)
            except Exception:
                log.exception("%s: handling %s failed", self._name, type(message).__name__)
