"""``make bench``: the AIP control plane's benchmark suite (see :mod:`bench.run`).

Baselines and load generators run with the services' gRPC runtime defaults, applied here
before any module of the suite imports grpc, so that the gRPC baselines measure the
same runtime as the services.
"""

from aip_runtime.grpc_env import apply_defaults

apply_defaults()
