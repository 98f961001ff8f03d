"""Bad environment values of ``aip-task`` and ``aip-device`` are reported like bad flags:
the variable, its flag and what is accepted, exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    ("aip_client.cli_task", {"AIP_TASK_TIMEOUT": "abc"},
     "AIP_TASK_TIMEOUT='abc' (for --timeout): expected a number"),
    ("aip_client.cli_device", {"AIP_DEVICE_LOG_LEVEL": "loud"},
     "AIP_DEVICE_LOG_LEVEL='loud' (for --log-level): expected one of debug, info, warning, error"),
    ("aip_client.cli_device", {"AIP_DEVICE_OUTPUT_CAP": "1.5"},
     "AIP_DEVICE_OUTPUT_CAP='1.5' (for --output-cap): expected a whole number"),
    ("aip_client.cli_device", {"AIP_DEVICE_ALLOW_SHELL": "maybe"},
     "AIP_DEVICE_ALLOW_SHELL='maybe' (for --allow-shell): expected 1/true/yes/on"),
]


@pytest.mark.parametrize(("module", "env", "expected"), CASES)
def test_a_bad_environment_value_names_its_variable(module: str, env: dict[str, str],
                                                    expected: str) -> None:
    code = f"import sys; from {module} import parse_args; parse_args(['--help'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
