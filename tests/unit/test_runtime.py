"""aip_runtime: the process settings both services apply at start."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aip_runtime import gc_tuning, grpc_env


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_tune_gc_raises_thresholds_and_freezes_what_exists(restored_gc: None) -> None:
    gc.unfreeze()
    gc_tuning.tune_gc()
    assert gc.get_threshold() == (gc_tuning.YOUNG, gc_tuning.MIDDLE, gc_tuning.OLD)
    assert gc.get_freeze_count() > 1000  # modules, classes, functions of this process


def _experiments_seen_by_a_fresh_process(env: dict[str, str]) -> str:
    code = ("import os, gateway_service, grpc; "
            "print(os.environ.get('GRPC_EXPERIMENTS', '<unset>'))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_the_grpc_default_is_in_place_before_grpc_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert _experiments_seen_by_a_fresh_process(env) == grpc_env.DEFAULT_GRPC_EXPERIMENTS


@pytest.mark.parametrize("own", ["", "-event_engine_dns"])
def test_an_operators_grpc_experiments_win(own: str) -> None:
    assert _experiments_seen_by_a_fresh_process({**os.environ, "GRPC_EXPERIMENTS": own}) == own


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    code = ("import resource; from aip_runtime.fd_limit import raise_fd_limit; "
            "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard)); "
            "now = raise_fd_limit(); "
            "hard = 1 << 20 if hard == resource.RLIM_INFINITY else hard; "
            "print(now, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    now, soft, hard = (int(part) for part in done.stdout.split())
    assert now == soft
    assert soft == hard
