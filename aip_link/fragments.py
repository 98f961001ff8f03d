"""A link message too large for one batch, cut into pieces and put back together.

The sending end serializes such a message once and cuts the bytes with :func:`split`;
each piece goes out as its own stream message, the last one marked, and nothing else is
written in between. The receiving end feeds the pieces to its stream's
:class:`Reassembly`, which hands back the whole message's bytes with the last piece.
Neither knows protobuf: :mod:`aip_link.codec` serializes and parses.
"""

from __future__ import annotations


class FragmentError(Exception):
    """The peer broke the fragment protocol; the stream cannot be trusted any further."""


def split(data: bytes, limit: int) -> list[bytes]:
    """``data`` in consecutive pieces of at most ``limit`` bytes; at least one piece, so
    that even empty data has a last piece."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    if len(data) <= limit:
        return [data]
    view = memoryview(data)
    return [bytes(view[start:start + limit]) for start in range(0, len(data), limit)]


class Reassembly:
    """The pieces of the message arriving on one stream, up to ``limit`` bytes in all.

    A stream that announces more than ``limit`` bytes, or that sends anything else
    while a message is incomplete, is broken: :class:`FragmentError`.
    """

    __slots__ = ("_limit", "_pieces", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pieces: list[bytes] = []
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes received of a message not yet complete (``0`` between messages)."""
        return self._size

    @property
    def incomplete(self) -> bool:
        """Whether some pieces arrived and the last one has not."""
        return bool(self._pieces)

    def add(self, piece: bytes, last: bool) -> bytes | None:
        """Take the next piece; the whole message's bytes once ``last`` is set."""
        size = self._size + len(piece)
        if size > self._limit:
            self._pieces = []
            self._size = 0
            raise FragmentError(
                f"a fragmented link message exceeds {self._limit} bytes ({size} so far)"
            )
        if last:
            if not self._pieces:
                return piece
            self._pieces.append(piece)
            whole = b"".join(self._pieces)
            self._pieces = []
            self._size = 0
            return whole
        self._pieces.append(piece)
        self._size = size
        return None

    def expect_whole(self, what: str) -> None:
        """Check that no message is half received before ``what``, an unfragmented
        message, is taken: pieces are never interleaved with other messages."""
        if self._pieces:
            size = self._size
            self._pieces = []
            self._size = 0
            raise FragmentError(
                f"{what} arrived in the middle of a fragmented message ({size} bytes in)"
            )
