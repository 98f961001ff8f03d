"""Prometheus metrics of the gateway, served at ``/metrics``."""

from prometheus_client import Counter, Gauge, Histogram

from aip_wire.vocab import ClientType

CLIENTS = Gauge("aip_gateway_clients", "Registered clients", ["client_type"])
FRAMES_IN = Counter("aip_gateway_frames_in_total", "Frames received from clients", ["type"])
FRAME_ERRORS = Counter(
    "aip_gateway_frame_errors_total", "Frames answered with an error frame", ["reason"]
)
REGISTRATIONS = Counter(
    "aip_gateway_registrations_total", "Registration attempts", ["outcome"]
)
TASKS = Counter("aip_gateway_tasks_total", "Task lifecycle events", ["event"])
DROPPED_RESULTS = Counter(
    "aip_gateway_dropped_command_results_total", "command_results dropped", ["reason"]
)
TAKEOVERS = Counter(
    "aip_gateway_takeovers_total",
    "Registrations with a client_id a live connection held: taken over or refused",
    ["outcome", "reason"],
)
REPLICAS_UP = Gauge("aip_gateway_replicas_up", "Replicas with a healthy link")
REPLICA_LINK_UP = Gauge(
    "aip_gateway_replica_link_up", "1 while the link to the replica is up, 0 while it is "
    "down (the replica's address is the label)", ["replica"],
)
TASKS_REFUSED = Counter(
    "aip_gateway_tasks_refused_total", "Task frames answered with an error frame, by the "
    "reason's code (limit, not_found, exists, rate_limited, unavailable, ...)", ["reason"],
)

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
         0.5, 1.0, 2.5, 5.0, 10.0)
REGISTRATION_SECONDS = Histogram(
    "aip_gateway_registration_seconds",
    "Time from a socket's register frame to its registration accepted or refused "
    "(token check, target lookup, takeover probe)", ["outcome"], buckets=_FAST,
)
TASK_SUBMIT_SECONDS = Histogram(
    "aip_gateway_task_submit_seconds",
    "Time from a task frame to the replica's answer (the requester's ack or error)",
    buckets=_FAST,
)
COMMAND_FORWARD_SECONDS = Histogram(
    "aip_gateway_command_forward_seconds",
    "Time the gateway holds command traffic: to_device per batch of frames from a "
    "replica's link handed to the devices' outboxes, to_replica per command_results "
    "frame from its arrival to its queueing on the link", ["direction"], buckets=_FAST,
)
FORWARD_TO_DEVICE = COMMAND_FORWARD_SECONDS.labels("to_device")
FORWARD_TO_REPLICA = COMMAND_FORWARD_SECONDS.labels("to_replica")

# Sockets: what the guards refused or cut off (gateway_service.socket_guard and the
# protocol classes).
SOCKETS_REFUSED = Counter(
    "aip_gateway_sockets_refused_total",
    "Connections refused at once: --max-unregistered sockets were waiting to register",
)
HANDSHAKE_TIMEOUTS = Counter(
    "aip_gateway_handshake_timeouts_total",
    "HTTP requests (WebSocket upgrades included) closed: headers not complete within "
    "--handshake-timeout",
)
OVERSIZE_CLOSES = Counter(
    "aip_gateway_oversize_closes_total",
    "WebSocket connections closed with 1009: a message over the size limit",
    ["phase"],
)
BUDGET_CLOSES = Counter(
    "aip_gateway_partial_budget_closes_total",
    "WebSocket connections closed with 1013: their partial frames would exceed "
    "--partial-frames-budget",
)
PONGS_DROPPED = Counter(
    "aip_gateway_pongs_dropped_total",
    "Pongs not queued because the peer was not reading what it was already sent",
)
UNREGISTERED_SOCKETS = Gauge(
    "aip_gateway_unregistered_sockets", "Sockets accepted and not registered yet"
)
PARTIAL_FRAME_BYTES = Gauge(
    "aip_gateway_partial_frame_bytes", "Bytes held in partially received frames"
)

# Children used on every connection, looked up once: labels() costs a lock and a tuple.
REGISTRATIONS_ACCEPTED = REGISTRATIONS.labels("accepted")
OVERSIZE_UNREGISTERED = OVERSIZE_CLOSES.labels("unregistered")
OVERSIZE_REGISTERED = OVERSIZE_CLOSES.labels("registered")
CLIENTS_BY_TYPE = {client_type: CLIENTS.labels(client_type) for client_type in ClientType}
