"""Gateway configuration: command-line flags, each also read from ``AIP_GATEWAY_*``."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aip_link.credentials import read_token
from aip_runtime.cli import LogFormat, LogLevel, check_readable
from gateway_service.auth import parse_tokens
from gateway_service.replicas.resolver import split_host_port

MiB = 1 << 20


def _default_gateway_id() -> str:
    return f"gw-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class GatewaySettings(BaseSettings):
    """Starts the AIP gateway (WebSocket at /ws, HTTP API at /api).

    Every flag can also be set by an environment variable: AIP_GATEWAY_ followed by the
    flag in upper case with dashes as underscores (AIP_GATEWAY_SESSION_SERVICE=...).
    """

    model_config = SettingsConfigDict(
        env_prefix="AIP_GATEWAY_",
        cli_kebab_case=True,
        cli_prog_name="aip-gateway",
        cli_implicit_flags=True,
    )

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    session_service: str = Field(
        "127.0.0.1:50051",
        description="Session-service replicas, as HOST:PORT[,HOST:PORT...]; a name that "
        "resolves to several addresses is one replica per address.",
    )
    resolve_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between DNS look-ups of session-service names, which pick up "
        "replicas added or removed by scaling.",
    )
    gateway_id: str = Field(
        default_factory=_default_gateway_id,
        description="This gateway's identity on the link (default: host, pid, random).",
    )
    registration_timeout: float = Field(
        10.0, gt=0, description="Seconds a new socket has to send its register frame."
    )
    refuse_duplicates: bool = Field(
        False,
        description="Refuse a client_id that is already connected instead of letting "
        "the newer connection take over.",
    )
    takeover_probe_timeout: float = Field(
        2.0, gt=0,
        description="Seconds the holder of a client_id has to answer a WebSocket ping "
        "when another connection registers with that id without a token for it; a "
        "holder that answers keeps the id and the newcomer is refused with 4409.",
    )
    submit_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a replica to accept a task."
    )
    lookup_timeout: float = Field(
        2.0, gt=0, description="Seconds to ask a replica about a device on another gateway."
    )
    session_tls_ca: Path | None = Field(
        None, description="Speak TLS to the replicas, trusting this CA (PEM)."
    )
    session_tls_cert: Path | None = Field(
        None, description="Client certificate for mutual TLS with the replicas (PEM)."
    )
    session_tls_key: Path | None = Field(None, description="Key of --session-tls-cert.")
    session_tls_server_name: str | None = Field(
        None, description="Name to check in the replicas' certificates, when they are "
        "reached by address (compose, Kubernetes pod IPs).",
    )
    session_token: str | None = Field(
        None, description="API token sent to the replicas as a bearer token on their "
        "SessionApi (device lookups); the replicas' --auth-token."
    )
    link_token: str | None = Field(
        None, description="Token that opens the gateway link on the replicas (their "
        "--link-token), sent as a bearer token on GatewayLink/Connect only."
    )
    link_token_file: Path | None = Field(
        None, description="Read --link-token from this file (first line)."
    )
    api_key: str | None = Field(
        None, description="When set, the HTTP API requires this value in X-API-Key."
    )
    tokens_file: Path | None = Field(
        None,
        description="Client tokens, hashed: lines of 'client_id client_type sha256:HEX'. "
        "With tokens configured every client must authenticate.",
    )
    tokens: str | None = Field(
        None, description="More token entries in the tokens-file format, ';'-separated."
    )
    mcp: bool = Field(
        True, description="Serve the fleet as an MCP server (Streamable HTTP) at /mcp."
    )
    mcp_allowed_origins: str = Field(
        "", description="Origins (besides loopback ones) whose browsers may call /mcp, "
        "comma-separated, e.g. https://ide.example.com; 'https://host:*' allows any port. "
        "Requests from any other Origin are refused (403): DNS rebinding protection.",
    )
    mcp_allowed_hosts: str = Field(
        "", description="Host headers (besides loopback ones) /mcp answers, comma-separated, "
        "e.g. gateway.example.com:8000 or gateway.example.com:*; others are refused (421).",
    )
    mcp_max_sessions: int = Field(
        1000, ge=1, description="MCP sessions open at once; one more is answered 503."
    )
    mcp_watch_interval: float = Field(
        2.0, gt=0,
        description="Seconds between looks at the device list while an MCP client listens "
        "for changes (resources/list_changed); nothing is looked at while none listens.",
    )
    task_rate: float = Field(
        20.0, gt=0, description="Tasks per second one client may submit on average."
    )
    task_burst: int = Field(40, ge=1, description="Tasks one client may submit at once.")
    max_body_bytes: int = Field(
        1 * MiB, ge=1,
        description="Largest HTTP API request body, bytes; a larger one is answered 413 "
        "before it is read (Content-Length, or the bytes of a chunked body as they come).",
    )

    silence_limit: float = Field(
        300.0,
        gt=0,
        description="Seconds without any frame after which a client is evicted (reference "
        "devices heartbeat every 120 s; WebSocket pings find vanished peers sooner).",
    )
    drain_timeout: float = Field(
        10.0, ge=0, description="Seconds to flush queued frames on SIGTERM before closing."
    )
    max_pending_sends: int = Field(
        1000, ge=1, description="Frames queued for one client before it is disconnected."
    )
    max_pending_bytes: int = Field(
        256 * MiB, ge=1024,
        description="Characters (bytes, for ASCII JSON) of frames queued for one client "
        "before it is disconnected; the frame being written is not counted. The default "
        "lets two --ws-max-size results wait behind the one being written.",
    )
    ws_max_size: int = Field(
        100 * MiB, ge=1024,
        description="Largest WebSocket message accepted from a registered client, bytes.",
    )
    ws_max_size_unregistered: int = Field(
        1 * MiB, ge=1024,
        description="Largest WebSocket message accepted before registration, bytes. A "
        "register frame is a few KB, but its metadata carries the device's info, which "
        "some fleets fill with tens of KB; far below a screenshot-sized frame.",
    )
    partial_frames_budget: int = Field(
        1024 * MiB, ge=1024,
        description="Bytes of partially received frames all sockets together may hold; a "
        "socket that would go past it is closed with 1013.",
    )
    handshake_timeout: float = Field(
        10.0, gt=0,
        description="Seconds an HTTP request (a WebSocket upgrade too) has to send its "
        "headers before its socket is closed.",
    )
    max_unregistered: int = Field(
        10_000, ge=1,
        description="Sockets accepted and not yet registered (half-open upgrades "
        "included) beyond which new connections are refused with 503; lowered at start "
        "to half the open-file limit if that is less.",
    )
    ws_ping_interval: float = Field(20.0, ge=0, description="WebSocket ping interval, s.")
    ws_ping_timeout: float = Field(20.0, ge=0, description="WebSocket pong timeout, s.")
    link_backoff_min: float = Field(
        0.2, gt=0, description="First delay before reconnecting a lost link, s."
    )
    link_backoff_max: float = Field(5.0, gt=0, description="Longest reconnect delay, s.")
    link_ping_interval: float = Field(
        5.0, gt=0, description="Seconds between pings on each replica link."
    )
    link_silence_limit: float = Field(
        15.0, gt=0,
        description="A link that brings nothing back for this long (not even a pong) is "
        "taken for dead and reconnected, s.",
    )
    presence_linger: float = Field(
        0.01, ge=0, le=1,
        description="Seconds a client's arrival or departure may wait on a replica link "
        "for others to share its stream message (registrations one by one cost a link "
        "write each otherwise); anything else sent on the link takes it along at once. "
        "A replica's StartSession waits for a device that is not there yet "
        "(--device-wait), so this window is not seen there. 0 writes each at once.",
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="debug, info, warning or error.")
    otlp_endpoint: str = Field(
        "", description="Send OpenTelemetry traces to this OTLP/gRPC collector "
        "(host:port, or an http:// or https:// URL); none by default.",
    )
    log_format: LogFormat = Field(
        LogFormat.TEXT, description="text, or json: one JSON object per line."
    )

    @field_validator("session_service")
    @classmethod
    def _valid_addresses(cls, value: str) -> str:
        entries = [part.strip() for part in value.split(",") if part.strip()]
        if not entries:
            raise ValueError("at least one session-service address is required")
        for entry in entries:
            split_host_port(entry)
        return value

    @model_validator(mode="after")
    def _tls_material(self) -> GatewaySettings:
        if (self.session_tls_cert is None) != (self.session_tls_key is None):
            raise ValueError("--session-tls-cert and --session-tls-key go together")
        if self.session_tls_cert is not None and self.session_tls_ca is None:
            raise ValueError("mutual TLS (--session-tls-cert) needs --session-tls-ca")
        return self

    @model_validator(mode="after")
    def _link_credential(self) -> GatewaySettings:
        self.link_token = read_token(self.link_token, self.link_token_file, "link-token")
        self.link_token_file = None
        return self

    @model_validator(mode="after")
    def _tokens_fail_closed(self) -> GatewaySettings:
        # A tokens file that names no client would turn authentication off without a word:
        # refuse to start instead, as for one that cannot be read.
        path = self.tokens_file
        if path is not None:
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise ValueError(f"--tokens-file {path}: cannot be read ({reason})") from None
            if not parse_tokens(text, f"--tokens-file {path}"):
                raise ValueError(f"--tokens-file {path} has no token entries: with it, every "
                                 "client must authenticate, so it must name at least one")
        if self.tokens and self.tokens.strip() and not parse_tokens(self.tokens, "--tokens"):
            raise ValueError("--tokens has no token entries: give at least one, or drop it")
        return self

    @model_validator(mode="after")
    def _files_readable(self) -> GatewaySettings:
        # Missing certificates are found at start, not at first use (token files: above).
        check_readable(self.session_tls_ca, "--session-tls-ca")
        check_readable(self.session_tls_cert, "--session-tls-cert")
        check_readable(self.session_tls_key, "--session-tls-key")
        return self

    def session_addresses(self) -> list[str]:
        return [part.strip() for part in self.session_service.split(",") if part.strip()]
