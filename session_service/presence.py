"""Which clients are connected, on which gateway, with what device info.

Every gateway announces its clients to every replica, so any replica can start a session
on any device and knows where to send its commands.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aip_link.messages import ClientPresence
from aip_wire.vocab import ClientType


@dataclass(slots=True)
class ClientRecord:
    client_id: str
    client_type: ClientType
    platform: str
    device_info: dict[str, Any]
    gateway_id: str

    @classmethod
    def of(cls, presence: ClientPresence) -> ClientRecord:
        return cls(
            client_id=presence.client_id,
            client_type=presence.client_type,
            platform=presence.platform,
            device_info=presence.device_info,
            gateway_id=presence.gateway_id,
        )


class Presence:
    def __init__(self) -> None:
        self._clients: dict[str, ClientRecord] = {}
        #: device_id -> what waits for it to come online (:meth:`wait_device`).
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, client_id: str) -> ClientRecord | None:
        return self._clients.get(client_id)

    def device(self, device_id: str) -> ClientRecord | None:
        record = self._clients.get(device_id)
        return record if record is not None and record.client_type == ClientType.DEVICE else None

    def devices(self) -> list[ClientRecord]:
        return [record for record in self._clients.values()
                if record.client_type == ClientType.DEVICE]

    def online(self, record: ClientRecord) -> None:
        self._clients[record.client_id] = record
        if self._waiting and record.client_type == ClientType.DEVICE:
            for waiter in self._waiting.pop(record.client_id, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_device(self, device_id: str, timeout: float) -> ClientRecord | None:
        """The device, once it is connected, waiting at most ``timeout`` seconds for it.

        A device hears its registration accepted a moment before the replicas do (the
        gateway may hold presence back to batch it): a backend told at once of a new
        device must not find it unknown here."""
        record = self.device(device_id)
        if record is not None or timeout <= 0:
            return record
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(device_id, []).append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            waiters = self._waiting.get(device_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiting[device_id]
        return self.device(device_id)

    def offline(self, client_id: str, gateway_id: str) -> ClientRecord | None:
        """Remove a client if it is still known on ``gateway_id``; returns it if removed."""
        record = self._clients.get(client_id)
        if record is None or record.gateway_id != gateway_id:
            return None
        del self._clients[client_id]
        return record

    def replace_gateway(self, gateway_id: str, records: list[ClientRecord]) -> list[ClientRecord]:
        """Apply a gateway's full snapshot; returns its clients that are gone."""
        present = {record.client_id for record in records}
        gone = [
            record
            for record in self._clients.values()
            if record.gateway_id == gateway_id and record.client_id not in present
        ]
        for record in gone:
            del self._clients[record.client_id]
        for record in records:
            self.online(record)
        return gone

    def drop_gateway(self, gateway_id: str) -> list[ClientRecord]:
        return self.replace_gateway(gateway_id, [])

    def update_info(self, device_id: str, info: dict[str, Any]) -> None:
        record = self.device(device_id)
        if record is not None:
            record.device_info = info
