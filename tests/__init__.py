"""Tests run with the gRPC runtime defaults the services ship with (before grpc loads)."""

from aip_runtime.grpc_env import apply_defaults

apply_defaults()
