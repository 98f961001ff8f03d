"""The device's safety rules: file roots, permanent refusals, log redaction."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from aip_client.errors import ToolFailure
from aip_client.file_tools import FileRoots, default_workdir
from aip_client.redact import RedactingFilter, redact, server_text
from aip_client.refusals import RefusalKind, judge_close, judge_http_status
from aip_client.tools import builtin_registry


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A root with a file, a symlink out, and a secret beside the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cret")
    (root / "mine.txt").write_text("mine")
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "door").symlink_to(outside)
    return root, outside


def test_paths_resolve_inside_the_roots(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    roots = FileRoots.of(root)
    assert roots.resolve("mine.txt") == root.resolve() / "mine.txt"
    assert roots.resolve("sub/../mine.txt") == root.resolve() / "mine.txt"
    assert roots.resolve(str(root / "new.txt")) == root.resolve() / "new.txt"
    for escape in (
        "escape",
        "door/secret.txt",
        "../outside/secret.txt",
        str(outside / "secret.txt"),
        "/etc/shadow",
        "~",
    ):
        with pytest.raises(ToolFailure, match="outside the allowed roots") as caught:
            roots.resolve(escape)
        assert str(root.resolve()) in str(caught.value)
    assert FileRoots.of(root, [outside]).resolve("escape") == (outside / "secret.txt").resolve()


def test_roots_create_the_workdir_and_check_allowed_paths(tmp_path: Path) -> None:
    roots = FileRoots.of(tmp_path / "a" / "b")
    assert roots.workdir.is_dir() and roots.roots == (roots.workdir,)
    with pytest.raises(ValueError, match="not an existing directory"):
        FileRoots.of(tmp_path, [tmp_path / "missing"])


def test_default_workdir_is_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    assert default_workdir("my-laptop") == Path("/data/aip-device/my-laptop")
    assert default_workdir("../x/y") == Path("/data/aip-device/_x_y")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_workdir("d") == Path.home() / ".local/share/aip-device/d"


async def test_file_tools_refuse_outside_and_work_inside(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    tools = builtin_registry(workdir=root)
    for path in ("/etc/shadow", str(outside / "secret.txt"), "escape", "../outside/secret.txt"):
        outcome = await tools.call("read_file", {"path": path})
        assert outcome.status == "failure", path
        assert "outside the allowed roots" in (outcome.error or "")
        assert "s3cret" not in str(outcome.result)
    denied = await tools.call("write_file", {"path": "door/new.txt", "content": "x"})
    assert denied.status == "failure" and not (outside / "new.txt").exists()
    assert (await tools.call("list_directory", {"path": ".."})).status == "failure"
    assert (await tools.call("read_file", {"path": "mine.txt"})).result["content"] == "mine"
    written = await tools.call(
        "write_file", {"path": "d/f.txt", "content": "ok", "make_dirs": True}
    )
    assert written.status == "success" and (root / "d" / "f.txt").read_text() == "ok"
    listing = await tools.call("list_directory")
    assert {e["name"] for e in listing.result["entries"]} >= {"mine.txt", "d"}


async def test_shell_stays_off_unless_allowed_and_starts_in_the_workdir(tmp_path: Path) -> None:
    off = await builtin_registry(workdir=tmp_path).call("run_shell", {"cmd": "pwd"})
    assert off.status == "failure" and "--allow-shell" in (off.error or "")
    on = await builtin_registry(workdir=tmp_path, allow_shell=True).call(
        "run_shell", {"cmd": "pwd"}
    )
    assert on.result["stdout"].strip() == await asyncio.to_thread(os.path.realpath, tmp_path)


@pytest.mark.parametrize(
    ("status", "url", "kind", "words"),
    [
        (403, "ws://h:1/", RefusalKind.BAD_URL, "is the path /ws?"),
        (404, "ws://h:1/api?token=***", RefusalKind.BAD_URL, "is the path /ws?"),
        (404, "ws://h:1/ws", RefusalKind.BAD_URL, "HTTP 404"),
        (401, "ws://h:1/ws", RefusalKind.UNAUTHORIZED, "--token"),
        (403, "ws://h:1/ws/", RefusalKind.UNAUTHORIZED, "--token"),
    ],
)
def test_permanent_http_answers(status: int, url: str, kind: RefusalKind, words: str) -> None:
    refusal = judge_http_status(status, url)
    assert refusal is not None and refusal.kind is kind and words in str(refusal)


def test_transient_answers_are_retried() -> None:
    for status in (408, 429, 500, 502, 503):
        assert judge_http_status(status, "ws://h:1/ws") is None
    for code in (None, 1000, 1006, 1011, 1012, 1013, 4000, 4408, 4429):
        assert judge_close(code) is None
    unauthorized, duplicate = judge_close(4401, "no"), judge_close(4409)
    assert unauthorized is not None and unauthorized.kind is RefusalKind.UNAUTHORIZED
    assert "bad credentials" in str(unauthorized)
    assert duplicate is not None and duplicate.kind is RefusalKind.ID_IN_USE
    assert "another live connection" in str(duplicate)
    # After a drop the holder may be this device's own stale connection: try again.
    assert judge_close(4409, registered_before=True) is None
    assert judge_close(4401, registered_before=True) is not None
    assert {int(kind) for kind in RefusalKind} == {3, 4, 5}


def test_redact_masks_credentials_only() -> None:
    assert redact("ws://h:1/ws?token=SECRET") == "ws://h:1/ws?token=***"
    assert redact("at ws://h/ws?a=1&Token=S-1_x&b=2 now") == "at ws://h/ws?a=1&Token=***&b=2 now"
    assert redact("'ws://h/ws?api_key=K'") == "'ws://h/ws?api_key=***'"
    assert redact("no secrets: tokens are fine") == "no secrets: tokens are fine"


def test_server_text_is_escaped_bounded_and_redacted() -> None:
    assert server_text("line\nforged \x1b[31mred") == "line\\nforged \\x1b[31mred"
    cut = server_text("x" * 1000, limit=10)
    assert cut == "xxxxxxxxxx... (990 more characters)"
    assert server_text("see ?token=ABC") == "see ?token=***"
    assert server_text(None) == "None"


def test_the_filter_masks_every_record() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "url %s", ("ws://h?token=T",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "url ws://h?token=***"
