"""gRPC core options for every process of the project.

gRPC core reads ``GRPC_EXPERIMENTS`` once, when :mod:`grpc` is first imported, so these
defaults are applied by the packages that use gRPC (``gateway_service``,
``session_service``) from their ``__init__``, before any of their modules imports it.

Why: with gRPC's EventEngine client and listener (on by default in current grpcio) every message
of a grpc.aio stream crosses one more thread on its way to the event loop. On a
two-core machine that doubled the latency of a bare grpc.aio bidi echo (about 270 us
against 150 us per round trip, ``make bench`` baseline B4) and every command of a
session crosses the link twice. The classic I/O manager that these flags select is
complete (TLS, keepalive, DNS) and is what gRPC shipped before.

An operator's own ``GRPC_EXPERIMENTS`` always wins; setting it empty keeps gRPC's own
defaults.
"""

from __future__ import annotations

import os

#: Experiments turned off unless the environment says otherwise.
DEFAULT_GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def apply_defaults() -> None:
    """Put the project's gRPC defaults in the environment, leaving set variables alone."""
    os.environ.setdefault("GRPC_EXPERIMENTS", DEFAULT_GRPC_EXPERIMENTS)
