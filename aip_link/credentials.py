"""Tokens read from a flag or a file, shared by both ends of the link."""

from __future__ import annotations

from pathlib import Path


def read_token(value: str | None, path: Path | None, flag: str) -> str | None:
    """A token given by value or by file (its first line, surrounding blanks removed).

    :raises ValueError: both given, an unreadable or empty file.
    """
    if value is not None and path is not None:
        raise ValueError(f"--{flag} and --{flag}-file are exclusive")
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read --{flag}-file {path}: {exc.strerror}") from None
        value = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise ValueError(f"--{flag}-file {path} is empty")
    if value is not None and not value.strip():
        raise ValueError(f"--{flag} is empty")
    return value.strip() if value is not None else None
