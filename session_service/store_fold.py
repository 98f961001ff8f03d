"""A batch of the store's writes, with each command sent and answered in it written once.

With a commit interval, a command's ``insert_command`` (when it is sent) and its
``update_command`` (when its results come) usually land in the same batch: folded into
one :func:`~session_service.store_sql.insert_answered_command`, the row is written once
instead of inserted and then rewritten. Only writes that leave other rows alone (other
commands, model turns) may lie between the two; any other write (a session's end, a
lease renewal that reaps sessions, a prune) ends the folding, so that every statement
sees the rows exactly as it would have without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from session_service import store_sql


class Op(Protocol):
    """One queued write: what :class:`~session_service.store.Write` holds."""

    @property
    def function(self) -> Callable[..., Any]: ...
    @property
    def args(self) -> tuple[Any, ...]: ...
    @property
    def written(self) -> Any: ...


W = TypeVar("W", bound="Op")

#: Writes that may lie between a command's insert and its update.
_NEUTRAL = (store_sql.insert_command, store_sql.update_command, store_sql.insert_turn)


def fold(writes: list[W], make: Callable[[Callable[..., Any], tuple[Any, ...]], W]
                ) -> list[W]:
    """``writes`` with each command's insert and later update made one write (built with
    ``make(function, args)``); everything else as it was, in order."""
    out: list[W] = []
    sent: dict[tuple[str, int], int] = {}  # (session_id, seq) -> its insert's index
    for write in writes:
        function = write.function
        if function not in _NEUTRAL or write.written is not None:
            sent.clear()
            out.append(write)
        elif function is store_sql.insert_command:
            sent[(write.args[0], write.args[1])] = len(out)
            out.append(write)
        elif function is store_sql.update_command:
            index = sent.pop((write.args[0], write.args[1]), None)
            if index is None:
                out.append(write)
                continue
            session_id, seq, response_id, actions, sent_at = out[index].args
            _, _, results, received_at, status = write.args
            out[index] = make(store_sql.insert_answered_command,
                              (session_id, seq, response_id, actions, sent_at, results,
                               received_at, status))
        else:
            out.append(write)
    return out
