"""``aip-task --list-devices``: the connected devices, from whichever server part answers.

The session service's gRPC API is asked first (it knows each device's sessions and
host); the gateway's HTTP API is the fallback, so the listing works without gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aip_client.task_output import EXIT_CONNECT, EXIT_OK, fail, print_devices
from aip_client.task_session_api import devices_grpc
from aip_wire.vocab import ClientType


def _http_url(ws_url: str, path: str) -> str:
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _devices_http(args: argparse.Namespace) -> list[dict[str, Any]]:
    request = urllib.request.Request(_http_url(args.url, "/api/clients"))
    if args.api_key:
        request.add_header("X-API-Key", args.api_key)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    return [{"device_id": c.get("client_id"), "platform": c.get("platform"),
             "active_sessions": None, "gateway_id": None, "device_info": None}
            for c in body.get("clients", [])
            if c.get("client_type", ClientType.DEVICE) == ClientType.DEVICE]


async def list_devices(args: argparse.Namespace) -> int:
    devices = (await devices_grpc(args.session_service, args.session_token)
               if args.session_service else None)
    if devices is None:
        try:
            devices = await asyncio.to_thread(_devices_http, args)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            return fail(f"cannot list devices (gRPC {args.session_service or 'disabled'}, "
                        f"HTTP {_http_url(args.url, '/api/clients')}): {exc}", EXIT_CONNECT)
    print_devices(devices, args.json)
    return EXIT_OK
