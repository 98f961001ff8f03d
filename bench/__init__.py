"""``make bench``: the AIP control plane's benchmark suite (see :mod:`bench.run`)."""
