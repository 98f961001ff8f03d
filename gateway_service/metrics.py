"""Prometheus metrics of the gateway, served at ``/metrics``."""

from prometheus_client import Counter, Gauge

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
REPLICAS_UP = Gauge("aip_gateway_replicas_up", "Replicas with a healthy link")

# Children used on every connection, looked up once: labels() costs a lock and a tuple.
REGISTRATIONS_ACCEPTED = REGISTRATIONS.labels("accepted")
CLIENTS_BY_TYPE = {client_type: CLIENTS.labels(client_type) for client_type in ClientType}
