"""aip_runtime.malloc_tuning: when the allocator's thresholds are set."""

from __future__ import annotations

import platform

import pytest

from aip_runtime import malloc_tuning
from aip_runtime.malloc_tuning import should_tune


def test_glibc_is_tuned_unless_the_operator_chose() -> None:
    assert should_tune({}, "glibc")
    assert not should_tune({}, "")  # musl and others report no glibc
    for name in malloc_tuning.OPERATOR_SETTINGS:
        assert not should_tune({name: "1"}, "glibc")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_thresholds_are_accepted_by_this_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in malloc_tuning.OPERATOR_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    # mallopt answers 0 for a value out of its range (the mmap threshold stops at 32 MiB).
    assert malloc_tuning.tune_malloc()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert not malloc_tuning.tune_malloc()
