"""The C allocator's settings for the services' processes (glibc only).

Results carry screenshots of megabytes, and each crossing a process copies them a few
times (the WebSocket frame, the link's protobuf, the JSON text and the parsed string).
glibc serves every allocation above its *mmap threshold* with a fresh ``mmap`` and
returns it with ``munmap`` when freed, and it gives the top of its heap back to the
kernel once more than the *trim threshold* lies free there. Either way the next buffer
of that size lands on pages the kernel must fault in and zero again: a 5 MB result cost
the session service some 8,000 page faults, and its process spent more time in the
kernel than in Python. The thresholds start small and adapt only up to a point, which a
stream of such results keeps missing.

Fixing them at :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` keeps buffers below
16 MiB on the heap and up to 64 MiB of freed heap for the next ones: with 5 MB results
the session service's CPU per result fell by about a third and the gateway's by about a tenth
(benchmark figure 7). The price is that much more resident memory after a burst of large
results, never more. Larger buffers (up to the 100 MiB frame limit) are still mapped and
unmapped as before.

Settings already chosen for the process (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` in its environment) are left alone, as is
every C library other than glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from collections.abc import Mapping

log = logging.getLogger("aip.runtime.malloc")

#: Allocations of at least this many bytes get their own mapping.
MMAP_THRESHOLD = 16 * 1024 * 1024
#: Free bytes at the heap's top kept for later allocations rather than returned.
TRIM_THRESHOLD = 64 * 1024 * 1024

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Environment variables through which an operator sets these thresholds.
OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def should_tune(environ: Mapping[str, str], libc_name: str) -> bool:
    """Whether to set the thresholds: on glibc, unless the operator set them already."""
    return libc_name == "glibc" and not any(name in environ for name in OPERATOR_SETTINGS)


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds; call once, at start. Whether it did."""
    if not should_tune(os.environ, platform.libc_ver()[0]):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        done = (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError) as exc:
        log.debug("malloc thresholds left as they are: %s", exc)
        return False
    if not done:
        log.debug("malloc thresholds left as they are: mallopt refused them")
    return done
