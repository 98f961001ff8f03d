"""The AIP gateway: terminates device and constellation WebSockets, owns identities and
the client registry, and forwards tasks and command results to the session service."""

from aip_runtime.grpc_env import apply_defaults

apply_defaults()  # before any module of this package imports grpc
