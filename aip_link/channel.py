"""gRPC options of the link (and of the public API, which shares the replica's port).

Large frames (screenshots travel inline as base64), and keepalives that find a dead peer
within seconds even when the stream is idle. The server accepts the client's pings as
often as the client sends them.
"""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_COMMON: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

#: For channels to a replica (the gateway's link and API calls, and backends' stubs).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [*_COMMON, ("grpc.enable_retries", 0)]

#: For the replica's server.
SERVER_OPTIONS: list[tuple[str, Any]] = [
    *_COMMON, ("grpc.http2.min_ping_interval_without_data_ms", 5_000)
]
