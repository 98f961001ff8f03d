"""Install exactly the dependency floors of pyproject.toml and run the unit tests on them.

Usage: python scripts/check_floors.py [--keep] [--python PYTHON] [PYTEST_ARGS...]

Every ``name>=X`` of ``[project].dependencies`` becomes a ``name==X`` constraint; the
project is installed (not editable, so the build hook runs as for a user) with its dev
extra into a fresh virtual environment in a temporary directory, each service's module is
imported, and ``tests/unit`` with the command-line tests (:data:`TESTS`) runs from a copy
of ``tests/`` outside the checkout, so that the installed package is what gets tested.
Exits with pip's or pytest's status.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")
SERVICE_MODULES = (
    "gateway_service.__main__",
    "session_service.__main__",
    "session_service.server",
    "aip_client.cli_task",
    "aip_client.cli_device",
)

#: The unit tests, and the integration tests of flags, help and start-up errors: the
#: command line is what older pydantic-settings releases parse differently.
TESTS = (
    "tests/unit",
    "tests/integration/test_cli.py",
    "tests/integration/test_startup_errors.py",
)


def floors(pyproject: Path) -> dict[str, str]:
    """``{name: floor}`` of every dependency declared with a ``>=`` lower bound."""
    with pyproject.open("rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    found: dict[str, str] = {}
    for requirement in dependencies:
        match = FLOOR.match(requirement)
        if match is None:
            raise SystemExit(f"check_floors: no '>=' floor in {requirement!r}")
        found[match.group(1).lower()] = match.group(3)
    return found


def run(command: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(command), flush=True)
    status = subprocess.run(command, cwd=cwd).returncode
    if status != 0:
        raise SystemExit(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the venv")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args, pytest_args = parser.parse_known_args()
    work = Path(tempfile.mkdtemp(prefix="aip-floors-"))
    try:
        constraints = work / "floors.txt"
        pinned = floors(ROOT / "pyproject.toml")
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in pinned.items()))
        print(f"floors: {', '.join(f'{n}=={v}' for n, v in pinned.items())}", flush=True)
        venv = work / "venv"
        run([args.python, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--constraint",
                str(constraints),
                f"{ROOT}[dev]",
            ],
            cwd=work,
        )
        run([python, "-m", "pip", "check"], cwd=work)
        run([python, "-c", "; ".join(f"import {module}" for module in SERVICE_MODULES)], cwd=work)
        for command, flag in (
            ("aip-session", "--replica-id"),
            ("aip-gateway", "--session-service"),
        ):
            shown = subprocess.run(
                [str(venv / "bin" / command), "--help"], cwd=work, capture_output=True, text=True
            )
            if shown.returncode != 0 or flag not in shown.stdout:
                print(shown.stdout, shown.stderr, sep="\n")
                raise SystemExit(f"check_floors: {command} --help does not show {flag}")
        # A copy of the tests outside the checkout: the installed package is imported.
        shutil.copytree(
            ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
        run(
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, *pytest_args],
            cwd=work,
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
