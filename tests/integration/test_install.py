"""``pip install .`` (not editable) into a fresh virtual environment gives working
services: the build generates ``aip_grpc/`` from ``protos/``.

The install is made from a copy of the checkout without any generated module, so only
the build hook can have produced them; the services are then imported and run from
another directory, where nothing of the checkout is importable. It takes about 40 s (pip
may take the dependencies from its cache or the configured index).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*_pb2*.py",
    "*_pb2*.pyi",
    ".*_cache",
    ".hypothesis",
    "aip-sessions.sqlite3*",
    "bench-results",
)


@pytest.mark.timeout(400)
def test_a_plain_install_builds_the_grpc_modules(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    assert not list((source / "aip_grpc").glob("*_pb2*"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    # The checkout copy is left as it was: the modules went into the wheel only.
    assert not list((source / "aip_grpc").glob("*_pb2*"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import aip_grpc.link_pb2_grpc, aip_grpc.session_api_pb2_grpc, "
            "session_service.server, gateway_service.app, aip_grpc; print(aip_grpc.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=elsewhere,
    )
    assert imported.returncode == 0, imported.stderr
    assert str(venv) in imported.stdout
    for command in ("aip-session", "aip-gateway"):
        shown = subprocess.run(
            [str(venv / "bin" / command), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=elsewhere,
        )
        assert shown.returncode == 0, shown.stderr
        assert "--port" in shown.stdout
