"""Session-service configuration: command-line flags, each also read from ``AIP_SESSION_*``."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aip_link.credentials import read_token
from aip_runtime.cli import LogFormat, LogLevel, check_readable
from session_service.agents.llm_config import LlmConfig
from session_service.core.device_queue import QueueLimits


def _default_replica_id() -> str:
    return f"session-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SessionSettings(BaseSettings):
    """Starts one session-service replica (gRPC: the gateway link and the public API).

    Every flag can also be set by an environment variable: AIP_SESSION_ followed by the
    flag in upper case with dashes as underscores (AIP_SESSION_PORT=50052).
    """

    model_config = SettingsConfigDict(
        env_prefix="AIP_SESSION_",
        cli_kebab_case=True,
        cli_prog_name="aip-session",
        cli_implicit_flags=True,
    )

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(50051, ge=0, le=65535, description="TCP port to listen on.")
    replica_id: str = Field(
        default_factory=_default_replica_id,
        description="This replica's identity (default: host, pid, random).",
    )
    command_timeout: float = Field(
        60.0, gt=0, description="Seconds a device has to answer a command without its own timeout."
    )
    session_timeout: float = Field(
        3600.0, gt=0, description="Deadline of a whole session, seconds."
    )
    gateway_grace: float = Field(
        5.0,
        ge=0,
        description="Seconds a gateway whose link dropped may take to come back before "
        "its clients count as disconnected.",
    )
    link_silence_limit: float = Field(
        15.0,
        gt=0,
        description="A gateway link that brings nothing (gateways ping every few seconds) "
        "for this long is closed, as after a partition, seconds.",
    )
    record_retention: float = Field(
        3600.0, gt=0, description="Seconds an ended session's record is kept."
    )
    max_records: int = Field(
        10000, ge=1, description="Most ended sessions kept in memory (the store keeps "
        "every record for --record-retention)."
    )
    ended_memory_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Budget of the ended sessions kept in memory, "
        "bytes, as the size of their requests, command logs and results in JSON; the "
        "oldest beyond it are read from the store.",
    )
    store_backlog_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Bytes of command results queued for the "
        "store and not yet written; results beyond it are recorded elided (status kept, "
        "payload replaced by its size), so a slow disk cannot fill memory.",
    )
    session_log_bytes: int = Field(
        32 * 1024 * 1024, ge=0, description="Bytes of command results a running session "
        "keeps in memory (screenshots are megabytes each); the results of its older "
        "commands are read from the store.",
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus metrics at /metrics on this "
        "port (same host); none by default.",
    )
    store_path: str = Field(
        "./aip-sessions.sqlite3",
        description="SQLite file of session records and command logs, kept across "
        "restarts; ':memory:' keeps them in this process only, '' disables the store. "
        "A shorthand for --store-url sqlite:///PATH; --store-url wins when given.",
    )
    store_url: str = Field(
        "", description="The store every replica shares, which decides who owns a "
        "session id: sqlite:///PATH (replicas on one host share the file; "
        "sqlite:///:memory: for tests) or postgresql://USER:PASSWORD@HOST:PORT/DB "
        "(replicas on several hosts). Default: from --store-path.",
    )
    advertise_address: str = Field(
        "", description="host:port where other replicas reach this one, written in its "
        "lease in the store (default: --host:--port)."
    )
    lease_ttl: float = Field(
        6.0, gt=0, le=300, description="Seconds a replica's lease in the store lasts; it "
        "is renewed every min(2, ttl/3) s. Once it lapses, another replica marks the "
        "sessions it ran failed (replica_lost) within about ttl + min(2, ttl/3) s.",
    )
    store_commit_interval: float = Field(
        0.05, ge=0, le=5, description="Seconds the store gathers writes before one commit: "
        "fewer wake-ups of its writer thread under load, at the price of losing at most "
        "that much of the command log if the process is killed; 0 commits at once.",
    )
    device_wait: float = Field(
        0.25, ge=0, le=30, description="Seconds StartSession waits for a device that is "
        "not connected (yet) before answering NOT_FOUND: a device learns that its "
        "registration was accepted a moment before the replicas do (a gateway gathers "
        "presence for up to its --presence-linger). 0 answers at once.",
    )
    drain_timeout: float = Field(
        30.0, ge=0, description="On SIGTERM, seconds running sessions may take to finish "
        "before they are cancelled with reason replica_shutdown.",
    )
    max_running_per_device: int = Field(
        1, ge=0, description="Most sessions running at once on one device, across every "
        "replica sharing the store (a replica without a store counts its own); further "
        "ones wait in the device's queue, first come first served. 0: no limit, nothing "
        "waits.",
    )
    max_queued_per_device: int = Field(
        16, ge=0, description="Most sessions waiting for one device; one more is refused "
        "(RESOURCE_EXHAUSTED, or an error frame). 0: a busy device refuses at once.",
    )
    queue_timeout: float = Field(
        300.0, gt=0, description="Seconds a session may wait for its device before it is "
        "cancelled with reason queue_timeout.",
    )
    tls_cert: Path | None = Field(
        None, description="Serve TLS with this certificate (PEM); needs --tls-key."
    )
    tls_key: Path | None = Field(None, description="Private key of --tls-cert (PEM).")
    tls_client_ca: Path | None = Field(
        None, description="Require client certificates signed by this CA (mutual TLS)."
    )
    tls_peer_ca: Path | None = Field(
        None, description="Trust this CA (PEM) for the other replicas' certificates when "
        "forwarding a call to a session's owner (default: the system's roots); this "
        "replica presents --tls-cert to them."
    )
    auth_token: str | None = Field(
        None,
        description="API token backends (and gateways, for device lookups) must send as "
        "'authorization: Bearer <token>' metadata to call the SessionApi; it does not "
        "open the gateway link; the health service stays open.",
    )
    # The gateway link's credential: see session_service/security.py.
    link_token: str | None = Field(
        None, description="Token gateways must send ('authorization: Bearer <token>') to "
        "open the gateway link; --auth-token does not open it, nor this the API.",
    )
    link_token_file: Path | None = Field(
        None, description="Read --link-token from this file (first line)."
    )
    insecure_link: bool = Field(
        False, description="Start without a link token although --host is not loopback: "
        "anyone reaching the port can then pose as a gateway.",
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="debug, info, warning or error.")
    otlp_endpoint: str = Field(
        "", description="Send OpenTelemetry traces to this OTLP/gRPC collector "
        "(host:port, or an http:// or https:// URL); none by default.",
    )
    log_format: LogFormat = Field(
        LogFormat.TEXT, description="text, or json: one JSON object per line."
    )
    # The language-model agent (session_service/agents/llm.py); off unless both the URL
    # and the model are given.
    llm_base_url: str = Field(
        "", description="Base URL of an OpenAI-compatible Chat Completions endpoint "
        "(e.g. http://127.0.0.1:8000/v1); with --llm-model, natural-language requests "
        "run the language-model agent.",
    )
    llm_model: str = Field("", description="Model the language-model agent asks by "
                           "default (StartSession may name another).")
    llm_api_key: SecretStr | None = Field(
        None, description="API key of --llm-base-url; prefer AIP_SESSION_LLM_API_KEY or "
        "--llm-api-key-file. Never logged nor recorded.",
    )
    llm_api_key_file: Path | None = Field(
        None, description="Read --llm-api-key from this file (first line)."
    )
    llm_max_steps: int = Field(
        30, ge=1, description="Most tool calls one language-model session may make; one "
        "more fails the session.",
    )
    llm_timeout: float = Field(60.0, gt=0, description="Seconds one model call may take.")
    llm_max_retries: int = Field(
        2, ge=0, description="Retries of a model call that timed out or got 429/5xx, with "
        "backoff; after them the session fails with the cause.",
    )
    llm_max_result_chars: int = Field(
        20000, ge=100, description="Characters of one tool result's text the model is "
        "shown; longer text is cut with a note (images are sent as images).",
    )

    @property
    def llm(self) -> LlmConfig | None:
        """The language-model agent's configuration; ``None`` when not configured."""
        if not (self.llm_base_url and self.llm_model):
            return None
        key = self.llm_api_key.get_secret_value() if self.llm_api_key is not None else ""
        return LlmConfig(
            base_url=self.llm_base_url, model=self.llm_model, api_key=key,
            max_steps=self.llm_max_steps, timeout=self.llm_timeout,
            max_retries=self.llm_max_retries, max_result_chars=self.llm_max_result_chars,
        )

    @model_validator(mode="after")
    def _llm_credential(self) -> SessionSettings:
        given = self.llm_api_key.get_secret_value() if self.llm_api_key is not None else None
        key = read_token(given, self.llm_api_key_file, "llm-api-key")
        self.llm_api_key = SecretStr(key) if key is not None else None
        self.llm_api_key_file = None
        if bool(self.llm_base_url) != bool(self.llm_model):
            raise ValueError("--llm-base-url and --llm-model go together")
        if self.llm_base_url and not self.llm_base_url.startswith(("http://", "https://")):
            raise ValueError("--llm-base-url must be an http:// or https:// URL")
        return self

    @property
    def queue_limits(self) -> QueueLimits:
        return QueueLimits(self.max_running_per_device, self.max_queued_per_device)

    @property
    def store_location(self) -> str:
        """The store the settings name: an SQLite path or a PostgreSQL URL ('' for
        none)."""
        return store_location(self.store_url, self.store_path)

    @model_validator(mode="after")
    def _store(self) -> SessionSettings:
        store_location(self.store_url, self.store_path)  # raises on an unknown scheme
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> SessionSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return self

    @model_validator(mode="after")
    def _files_readable(self) -> SessionSettings:
        # A missing certificate is found at start, not when the server binds.
        check_readable(self.tls_cert, "--tls-cert")
        check_readable(self.tls_key, "--tls-key")
        check_readable(self.tls_client_ca, "--tls-client-ca")
        return self

    @model_validator(mode="after")
    def _link_credential(self) -> SessionSettings:
        self.link_token = read_token(self.link_token, self.link_token_file, "link-token")
        self.link_token_file = None
        if self.link_token is not None and self.link_token == self.auth_token:
            raise ValueError("--link-token must differ from --auth-token")
        return self


def store_location(url: str, path: str) -> str:
    """The SQLite file of ``--store-url`` (``sqlite:///PATH``, three slashes then the
    path, so ``sqlite:////abs/path`` is absolute), a PostgreSQL URL as given, or
    ``path`` without a URL."""
    if not url:
        return path
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        return url
    if scheme != "sqlite" or not sep or not rest.startswith("/") or rest == "/":
        raise ValueError(f"--store-url {scheme}://...: expected sqlite:///PATH or "
                         "postgresql://...")
    return rest[1:]
