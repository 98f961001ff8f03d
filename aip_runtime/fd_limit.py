"""Open-file limit for the services' processes.

Every WebSocket, every half-finished HTTP upgrade and every link stream holds a file
descriptor. Many systems start services with a soft limit of 1,024 even though the hard
limit allows far more, and a gateway that reaches the soft limit stops accepting anyone.
The soft limit may be raised up to the hard one without privileges, so both services do
that at start and log what they got.
"""

from __future__ import annotations

import logging

try:
    import resource
except ImportError:  # not on Windows: nothing to raise there
    resource = None  # type: ignore[assignment]

log = logging.getLogger("aip.runtime")


def raise_fd_limit() -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in
    force, or ``None`` where the platform has no such limit."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # An unlimited hard limit cannot be the soft one on Linux (EPERM above nr_open);
        # a million descriptors is far more than one process here will hold.
        target = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if soft == target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    log.info("open-file limit raised from %d to %d", soft, target)
    return target
