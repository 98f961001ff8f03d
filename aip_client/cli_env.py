"""Defaults of a command-line tool's flags from ``<PREFIX><FLAG>`` environment variables.

A bad value in the environment is reported like a bad flag (one line naming the variable,
its flag and what is accepted, exit status 2) instead of a traceback at start.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class EnvDefaults:
    """Reads and checks the variables of one tool; :meth:`check` reports the bad ones."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.problems: list[str] = []

    def _raw(self, name: str) -> str | None:
        return os.environ.get(f"{self.prefix}{name}")

    def _bad(self, name: str, value: str, accepted: str) -> None:
        flag = "--" + name.lower().replace("_", "-")
        self.problems.append(f"{self.prefix}{name}={value!r} (for {flag}): {accepted}")

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self._raw(name)
        return default if value is None else value

    def _converted(self, name: str, default: T, convert: Callable[[str], T],
                   accepted: str) -> T:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError:
            self._bad(name, value, accepted)
            return default

    def number(self, name: str, default: float) -> float:
        return self._converted(name, default, float, "expected a number")

    def integer(self, name: str, default: int) -> int:
        return self._converted(name, default, int, "expected a whole number")

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() not in choices:
            self._bad(name, value, f"expected one of {', '.join(choices)}")
            return default
        return value.lower()

    def switch(self, name: str) -> bool:
        value = self._raw(name)
        if value is None or value.lower() in ("", "0", "false", "no", "off"):
            return False
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        self._bad(name, value, "expected 1/true/yes/on or 0/false/no/off")
        return False

    def check(self, parser: argparse.ArgumentParser) -> None:
        """End the tool with status 2, as for a bad flag, when a variable was bad: one
        line (the usage would say nothing about the environment)."""
        if self.problems:
            parser.exit(2, f"{parser.prog}: error: {'; '.join(self.problems)}\n")
