"""The link between a gateway and a session-service replica, written once for both ends.

:mod:`aip_link.messages` is what crosses it, as plain dataclasses; :mod:`aip_link.codec`
is the only module that turns them into the link's protobuf and back;
:mod:`aip_link.batching` queues them into one stream message per batch, bounded in bytes
by :mod:`aip_link.sizes`, which also pages the presence snapshot;
:mod:`aip_link.fragments` cuts a larger message into pieces and puts them back together;
:mod:`aip_link.dispatch` hands each one received to its handler; and
:mod:`aip_link.channel` holds the gRPC options both ends use.
"""

from aip_runtime.grpc_env import apply_defaults

apply_defaults()  # before any module of this package imports grpc
