"""A small asyncio TCP proxy on loopback that tests can cut and restore.

Put it between two services (say a gateway's ``--session-service`` and a replica) to
simulate a network fault: :meth:`TcpProxy.cut` aborts every open connection on both
sides (a TCP reset, no goodbye of any protocol) and, until :meth:`TcpProxy.restore`,
aborts every new connection as soon as it is accepted, so reconnects fail too.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.stack import HOST

CHUNK = 64 * 1024


class TcpProxy:
    """Forward ``HOST:port`` (a free port) to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.is_cut = False
        #: Connections accepted so far (forwarded or refused), for tests to look at.
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Cleared while frozen: connections stay open but nothing crosses them.
        self._flowing = asyncio.Event()
        self._flowing.set()

    @classmethod
    def to(cls, address: str) -> TcpProxy:
        host, _, port = address.rpartition(":")
        return cls(host, int(port))

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ faults

    def cut(self) -> None:
        """Abort every connection now and refuse (abort) new ones until restored."""
        self.is_cut = True
        self._abort_all()

    def restore(self) -> None:
        """Forward new connections again."""
        self.is_cut = False

    def freeze(self) -> None:
        """A partition: every connection stays open, and nothing more crosses any of
        them, in either direction, until :meth:`thaw`. No reset, no FIN."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def _abort_all(self) -> None:
        for client, upstream in list(self._pairs):
            _abort(client)
            _abort(upstream)
        self._pairs.clear()

    # ------------------------------------------------------------------ forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.is_cut:
            _abort(writer)
            return
        try:
            async with asyncio.timeout(5):
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError):
            _abort(writer)
            return
        if self.is_cut:  # cut while connecting upstream
            _abort(writer)
            _abort(up_writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        loop = asyncio.get_running_loop()
        pumps = [
            loop.create_task(self._pump(reader, up_writer, pair)),
            loop.create_task(self._pump(up_reader, writer, pair)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Once both directions ended, close both sides and forget the pair.
        await asyncio.wait(pumps)
        self._pairs.discard(pair)
        for side in pair:
            with contextlib.suppress(Exception):
                side.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
            # An orderly end on one side is passed on as an orderly end.
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
        except (OSError, ConnectionError, RuntimeError):
            for side in pair:
                _abort(side)
            self._pairs.discard(pair)


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()
