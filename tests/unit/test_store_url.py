"""--store-url and --store-path: which store a replica opens."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from session_service.settings import SessionSettings, store_location
from session_service.store_db import shown


@pytest.mark.parametrize(("url", "path", "location"), [
    ("", "./records.sqlite3", "./records.sqlite3"),
    ("", ":memory:", ":memory:"),
    ("", "", ""),
    ("sqlite:///records.sqlite3", "ignored", "records.sqlite3"),
    ("sqlite:////var/lib/aip/records.sqlite3", "", "/var/lib/aip/records.sqlite3"),
    ("sqlite:///:memory:", "", ":memory:"),
    ("postgresql://aip:secret@db:5432/aip", "", "postgresql://aip:secret@db:5432/aip"),
])
def test_the_url_wins_and_the_path_is_its_shorthand(url: str, path: str,
                                                     location: str) -> None:
    assert store_location(url, path) == location


@pytest.mark.parametrize("url", ["mysql://db/aip", "sqlite://relative", "sqlite:///"])
def test_unknown_stores_are_refused_at_start(url: str) -> None:
    with pytest.raises(ValidationError, match="expected sqlite:///PATH or postgresql"):
        SessionSettings(store_url=url)


def test_passwords_stay_out_of_logs() -> None:
    assert shown("postgresql://aip:secret@db:5432/aip") == "postgresql://aip:***@db:5432/aip"
    assert shown("./records.sqlite3") == "./records.sqlite3"
