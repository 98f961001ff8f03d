"""Finding session-service replicas: addresses given, or DNS names that resolve to several.

``--session-service`` takes ``HOST:PORT`` entries. An IP literal is one replica. A name is
resolved again and again (``docker compose up --scale session=3`` gives the service name
one address per replica, in no particular order and with no load balancing), and the
gateway keeps one link per address it currently resolves to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

log = logging.getLogger("aip.gateway.replicas")


def split_host_port(entry: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port).

    :raises ValueError: no port, or a port that is not a number in range.
    """
    host, sep, port_text = entry.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"session-service address {entry!r} must be HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValueError(f"session-service address {entry!r} has an invalid port")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def pick_addresses(infos: list[tuple[int, str]], port: int) -> list[str]:
    """Addresses to link to from (family, ip) pairs: IPv4 when there is any.

    A name such as ``localhost`` resolves to both families for one server; linking to
    both would open two links to the same replica.
    """
    v4 = sorted({ip for family, ip in infos if family == socket.AF_INET})
    chosen = v4 or sorted({ip for family, ip in infos if family == socket.AF_INET6})
    return [format_address(ip, port) for ip in chosen]


class ReplicaResolver:
    """Turns the configured entries into the current set of replica addresses.

    A name that fails to resolve keeps the addresses it last resolved to, so a passing
    DNS fault does not tear links down.
    """

    def __init__(self, entries: list[str]) -> None:
        self.entries = [split_host_port(entry) for entry in entries]
        self._last: dict[tuple[str, int], list[str]] = {}

    async def resolve(self) -> list[str]:
        loop = asyncio.get_running_loop()
        addresses: list[str] = []
        for host, port in self.entries:
            if is_ip_literal(host):
                found = [format_address(host, port)]
            else:
                try:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    log.warning("cannot resolve session service %s: %s", host, exc)
                    found = self._last.get((host, port), [])
                else:
                    found = pick_addresses([(info[0], str(info[4][0])) for info in infos], port)
                    self._last[(host, port)] = found
            for address in found:
                if address not in addresses:
                    addresses.append(address)
        return addresses
