"""Prometheus metrics of the session service, served at ``/metrics`` on ``--metrics-port``."""

from prometheus_client import Counter, Gauge, Histogram

ACTIVE = Gauge("aip_session_active", "Sessions of this replica not ended yet (queued or "
               "running)")
SESSIONS = Gauge("aip_session_sessions", "Sessions of this replica not ended yet, by state "
                 "(queued: waiting for their device)", ["state"])
QUEUED = SESSIONS.labels("queued")
RUNNING = SESSIONS.labels("running")
MODEL_CALL_SECONDS = Histogram(
    "aip_session_model_call_seconds",
    "Time of one call of the language model (retries included), by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
ENDED = Counter("aip_session_ended_total", "Sessions ended, by final state", ["state"])
COMMAND_SECONDS = Histogram(
    "aip_session_command_seconds",
    "Time from sending a command to its results (or timeout)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 120),
)
GATEWAYS = Gauge("aip_session_gateways", "Gateways with an open link")
STORE_WRITE_ERRORS = Counter(
    "aip_session_store_write_errors_total",
    "Session-store writes that failed and were dropped (records lost)",
)
STORE_HEALTHY = Gauge(
    "aip_session_store_healthy", "1 while the session store can write, 0 while writes fail"
)
STORE_REFUSED = Counter(
    "aip_session_store_refused_total",
    "Sessions refused because their creation could not be written to the store",
)
ENDED_IN_MEMORY = Gauge("aip_session_ended_in_memory", "Ended sessions held in memory")
ENDED_MEMORY_BYTES = Gauge(
    "aip_session_ended_memory_bytes",
    "Estimated size of the ended sessions held in memory (see --ended-memory-bytes)",
)
RESULTS_RELEASED = Counter(
    "aip_session_results_released_total",
    "Command results a running session gave back from memory to stay within "
    "--session-log-bytes (the store keeps them)",
)
STORE_ELIDED = Counter(
    "aip_session_store_elided_total",
    "Command results recorded without their payloads because the store's write backlog "
    "was over --store-backlog-bytes",
)
