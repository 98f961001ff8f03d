"""The built-in file tools, confined to allowed roots.

A device serves ``list_directory``, ``read_file`` and ``write_file`` only inside its
roots: its working directory (where relative paths resolve) and the directories it was
given (``--allow-path``). Every path is resolved with ``realpath`` before the check, so
neither ``..`` nor a symlink leads out; a path outside is a ``failure`` naming the roots.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aip_client.errors import ToolFailure

DEFAULT_READ_LIMIT = 1024 * 1024


def default_workdir(client_id: str) -> Path:
    """A device's own working directory: ``$XDG_DATA_HOME/aip-device/<client_id>``
    (``~/.local/share`` when unset), the id made safe as one path component."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    name = re.sub(r"[^A-Za-z0-9._@-]", "_", client_id).strip(".") or "_"
    return Path(base) / "aip-device" / name


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


@dataclass(frozen=True, slots=True)
class FileRoots:
    """Where the file tools may go: ``workdir`` first, then the other allowed roots,
    every one a real path (symlinks resolved)."""

    workdir: Path
    roots: tuple[Path, ...]

    @classmethod
    def of(cls, workdir: str | Path, allow_paths: Iterable[str | Path] = ()) -> FileRoots:
        """Roots made of ``workdir`` (created when missing) and ``allow_paths``.

        :raises ValueError: an allowed path that is not an existing directory.
        """
        work = _real(workdir)
        work.mkdir(parents=True, exist_ok=True)
        extra = []
        for given in allow_paths:
            real = _real(given)
            if not real.is_dir():
                raise ValueError(f"allowed path {given!s} is not an existing directory")
            extra.append(real)
        return cls(work, tuple(dict.fromkeys((work, *extra))))

    def describe(self) -> str:
        return ", ".join(str(root) for root in self.roots)

    def resolve(self, path: str) -> Path:
        """The real path ``path`` names (relative to ``workdir``).

        :raises ToolFailure: it lies outside every root.
        """
        given = Path(os.path.expanduser(str(path)))
        real = _real(given if given.is_absolute() else self.workdir / given)
        if not any(real.is_relative_to(root) for root in self.roots):
            raise ToolFailure(
                f"Path '{path}' resolves to {real}, outside the allowed roots "
                f"({self.describe()}); the device may be started with --allow-path DIR"
            )
        return real


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "other"


def file_tools(roots: FileRoots) -> dict[str, Any]:
    """``list_directory``, ``read_file`` and ``write_file``, confined to ``roots``."""

    def list_directory(
        path: str = ".", include_hidden: bool = False, limit: int = 1000
    ) -> dict[str, Any]:
        """Tool: the entries of a directory with type, size and modification time."""
        base = roots.resolve(path)
        names = sorted(os.listdir(base))
        shown = [name for name in names if include_hidden or not name.startswith(".")]
        entries = []
        for name in shown[:limit]:
            try:
                st = (base / name).lstat()
            except OSError:
                continue
            entries.append(
                {
                    "name": name,
                    "type": _kind(st.st_mode),
                    "size": st.st_size,
                    "modified": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.st_mtime)),
                }
            )
        return {
            "path": str(base),
            "entries": entries,
            "count": len(shown),
            "truncated": len(shown) > limit,
        }

    def read_file(
        path: str, max_bytes: int = DEFAULT_READ_LIMIT, encoding: str = "utf-8"
    ) -> dict[str, Any]:
        """Tool: a text file's content, at most ``max_bytes`` of it."""
        target = roots.resolve(path)
        size = target.stat().st_size
        with open(target, "rb") as handle:
            data = handle.read(max(0, int(max_bytes)))
        return {
            "path": str(target),
            "size": size,
            "content": data.decode(encoding, errors="replace"),
            "truncated": size > len(data),
        }

    def write_file(
        path: str,
        content: str,
        append: bool = False,
        make_dirs: bool = False,
        encoding: str = "utf-8",
    ) -> dict[str, Any]:
        """Tool: write (or append) text to a file; returns its path and size."""
        target = roots.resolve(path)
        if make_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a" if append else "w", encoding=encoding) as handle:
            written = handle.write(content)
        return {"path": str(target), "written": written, "size": target.stat().st_size}

    return {"list_directory": list_directory, "read_file": read_file, "write_file": write_file}
