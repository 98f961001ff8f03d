"""aip_wire.names: task names safe for file names and logs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aip_wire.names import MAX_TASK_NAME, new_task_name, sanitize_task_name, task_name_problem

SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
FRESH = re.compile(r"task-[0-9a-f]{12}")


def test_new_task_name_form_and_uniqueness() -> None:
    names = {new_task_name() for _ in range(50)}
    assert len(names) == 50
    assert all(FRESH.fullmatch(name) for name in names)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("t1", "t1"),
        ("my-task_2.v3", "my-task_2.v3"),
        ("galaxy/x/t-1", "galaxy_x_t-1"),
        ("a\\b", "a_b"),
        ("../etc/passwd", "_._etc_passwd"),
        ("..", None),
        ("./x", "__x"),
        (".hidden", "_hidden"),
        ("a b", "a_b"),
        ("a\nb\x00c", "a_b_c"),
        ("tâche", "t_che"),
        ("任务1", "__1"),
        ("x:y*z?", "x_y_z_"),
    ],
)
def test_sanitize_task_name(name: str, expected: str | None) -> None:
    result = sanitize_task_name(name)
    if expected is None:
        assert FRESH.fullmatch(result)
    else:
        assert result == expected
    assert SAFE.fullmatch(result)


@pytest.mark.parametrize("name", [None, "", ".", "...", "/", "///", "../", "_", "-", "._-", "任务"])
def test_sanitize_task_name_gives_a_fresh_name_when_nothing_usable_remains(
    name: str | None,
) -> None:
    assert FRESH.fullmatch(sanitize_task_name(name))


def test_sanitize_task_name_truncates_over_long_names() -> None:
    assert sanitize_task_name("a" * 1000) == "a" * MAX_TASK_NAME
    assert len(sanitize_task_name("é" * 500)) in (MAX_TASK_NAME, len(new_task_name()))


def test_sanitize_keeps_a_safe_name_unchanged() -> None:
    name = "A" + "b" * (MAX_TASK_NAME - 1)
    assert sanitize_task_name(name) == name


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=400)))
def test_sanitize_always_gives_a_safe_name(name: str | None) -> None:
    result = sanitize_task_name(name)
    assert SAFE.fullmatch(result)
    assert len(result) <= MAX_TASK_NAME
    assert not result.startswith(".")
    if name is not None and task_name_problem(name) is None and name.strip("._-"):
        assert result == name


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("abcXYZ019._-"), min_size=1, max_size=MAX_TASK_NAME))
def test_sanitize_is_idempotent(name: str) -> None:
    once = sanitize_task_name(name)
    if not FRESH.fullmatch(once):
        assert sanitize_task_name(once) == once


@pytest.mark.parametrize("name", ["t1", "a.b", "A-Z_0.9", "x" * MAX_TASK_NAME, "_a", "-"])
def test_task_name_problem_accepts_safe_names(name: str) -> None:
    assert task_name_problem(name) is None


def test_task_name_problem_empty() -> None:
    assert task_name_problem("") == "task_name must not be empty"


def test_task_name_problem_too_long() -> None:
    assert task_name_problem("x" * (MAX_TASK_NAME + 1)) == (
        f"task_name must be at most {MAX_TASK_NAME} characters"
    )


@pytest.mark.parametrize(
    "name", ["galaxy/x/t-1", "../x", ".hidden", ".", "a b", "tâche", "a\n", "x\\y", "a:b"]
)
def test_task_name_problem_refuses_unsafe_names(name: str) -> None:
    assert task_name_problem(name) == (
        "task_name may only contain A-Z a-z 0-9 . _ - and must not start with '.'"
    )
