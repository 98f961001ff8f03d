"""Process-wide runtime settings shared by both services (and their tests and benchmark).

- :mod:`aip_runtime.grpc_env`: gRPC core options that must be in the environment before
  :mod:`grpc` is first imported.
- :mod:`aip_runtime.gc_tuning`: garbage-collector thresholds for a server that keeps
  thousands of long-lived connection objects.
"""
