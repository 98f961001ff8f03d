"""The session service: owns sessions, their command dispatchers, timeouts, cancellation
and agents, and serves the link for gateways and the public gRPC API for backends."""

from aip_runtime.grpc_env import apply_defaults

apply_defaults()  # before any module of this package imports grpc
