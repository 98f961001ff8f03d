"""Prometheus metrics of the session service."""

from prometheus_client import Counter, Gauge, Histogram

ACTIVE = Gauge("aip_session_active", "Running sessions on this replica")
ENDED = Counter("aip_session_ended_total", "Sessions ended, by final state", ["state"])
COMMAND_SECONDS = Histogram(
    "aip_session_command_seconds",
    "Time from sending a command to its results (or timeout)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 120),
)
GATEWAYS = Gauge("aip_session_gateways", "Gateways with an open link")
STORE_ERRORS = Counter("aip_session_store_errors_total", "Session-store writes that failed")
