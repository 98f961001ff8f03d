"""A small TCP balancer in front of the session replicas: one published address for
backends, whatever the number of replicas.

``python -m session_service.balancer --listen 0.0.0.0:50050 --target session:50051``
looks the target name up every ``--resolve-interval`` seconds (every address it resolves
to is one replica, as compose's service names and Kubernetes headless services give)
and hands each incoming connection to the next replica in turn, starting at a random
one. A replica that refuses the connection is skipped (and avoided for
``--dead-for`` seconds) and the next one tried; when none accepts, the connection is
closed.

It balances connections, not calls: gRPC keeps one HTTP/2 connection per channel, so
every call of one channel goes to the same replica. That is what the API needs (any
replica serves any call: sessions on other replicas are read from the shared store or
through the links), and TLS and tokens pass through untouched, end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import socket
import sys
import time
from collections.abc import Sequence

log = logging.getLogger("aip.session.balancer")

#: Bytes read at once from either side.
CHUNK = 256 * 1024


def split_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class Balancer:
    """Listens on ``listen`` and forwards each connection to one of ``target``'s
    addresses (a name, re-resolved, or a fixed list ``targets``)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int] | None = None,
                 *, targets: Sequence[tuple[str, int]] = (), resolve_interval: float = 2.0,
                 connect_timeout: float = 3.0, dead_for: float = 5.0) -> None:
        self.listen = listen
        self.target = target
        self.addresses: list[tuple[str, int]] = list(targets)
        self.resolve_interval = resolve_interval
        self.connect_timeout = connect_timeout
        self.dead_for = dead_for
        self._dead: dict[tuple[str, int], float] = {}
        self._next = random.randrange(1 << 16)
        self._server: asyncio.Server | None = None
        self._resolver: asyncio.Task[None] | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def resolve(self) -> list[tuple[str, int]]:
        """Look the target up now; keeps the last answer when the look-up fails."""
        if self.target is None:
            return self.addresses
        host, port = self.target
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve %s: %s", host, exc)
            return self.addresses
        found = sorted({(str(info[4][0]), port) for info in infos})
        if found != self.addresses:
            log.info("%s resolves to %d replica(s): %s", host, len(found),
                     ", ".join(f"{h}:{p}" for h, p in found))
        self.addresses = found
        return found

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resolve_interval)
            await self.resolve()

    async def start(self) -> int:
        await self.resolve()
        self._server = await asyncio.start_server(self._serve, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.target is not None:
            self._resolver = asyncio.get_running_loop().create_task(self._resolve_forever())
        log.info("balancing %s:%d over %s", self.listen[0], self.port,
                 f"{self.target[0]}:{self.target[1]}" if self.target else self.addresses)
        return self.port

    async def stop(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _order(self) -> list[tuple[str, int]]:
        """The replicas to try for the next connection: the next in turn first, those
        that recently refused a connection last."""
        addresses = self.addresses
        if not addresses:
            return []
        start = self._next % len(addresses)
        self._next += 1
        turn = addresses[start:] + addresses[:start]
        now = time.monotonic()
        alive = [a for a in turn if self._dead.get(a, 0.0) <= now]
        return alive + [a for a in turn if a not in alive]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for address in self._order():
            try:
                async with asyncio.timeout(self.connect_timeout):
                    streams = await asyncio.open_connection(*address)
            except (OSError, TimeoutError) as exc:
                log.warning("replica %s:%d refused a connection (%s): trying another",
                            address[0], address[1], exc)
                self._dead[address] = time.monotonic() + self.dead_for
                continue
            self._dead.pop(address, None)
            return streams
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            upstream = await self._connect()
            if upstream is None:
                log.warning("no replica accepts connections: closing the client's")
                return
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on (half-close)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            writer.close()


async def _run(args: argparse.Namespace) -> None:
    balancer = Balancer(split_address(args.listen), split_address(args.target),
                        resolve_interval=args.resolve_interval, dead_for=args.dead_for)
    await balancer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await balancer.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m session_service.balancer",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="0.0.0.0:50050", help="HOST:PORT to listen on")
    parser.add_argument("--target", default="session:50051",
                        help="NAME:PORT of the replicas; every address of NAME is one")
    parser.add_argument("--resolve-interval", type=float, default=2.0,
                        help="seconds between look-ups of NAME")
    parser.add_argument("--dead-for", type=float, default=5.0,
                        help="seconds a replica that refused a connection is tried last")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
