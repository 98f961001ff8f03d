"""Who opens /mcp and which devices each caller reaches: the tokens file's mcp entries
and their allow-lists, bearer headers, grants."""

from __future__ import annotations

import pytest

from gateway_service.auth import Authenticator, hash_token, parse_tokens
from gateway_service.mcp.access import (
    API_KEY_CLIENT,
    OPEN_CLIENT,
    Grant,
    bearer_token,
    credentials_required,
    device_allowed,
    grant_for,
    requester_id,
    visible,
)
from gateway_service.mcp.endpoint import security_settings, split_list

H = hash_token


def authenticator(text: str) -> Authenticator:
    return Authenticator(parse_tokens(text))


def test_mcp_entries_parse_with_and_without_an_allow_list() -> None:
    entries = parse_tokens(f"ide mcp {H('a')}\nlab MCP {H('b')} devices=lab-1,lab-2\n"
                           f"dev1 device {H('c')}")
    assert entries["ide"].client_type == "mcp" and entries["ide"].devices is None
    assert entries["lab"].client_type == "mcp"
    assert entries["lab"].devices == frozenset({"lab-1", "lab-2"})
    assert entries["dev1"].devices is None


@pytest.mark.parametrize("line, problem", [
    (f"dev1 device {H('a')} devices=x", "only mcp entries take devices="),
    (f"ide mcp {H('a')} hosts=x", "devices=ID"),
    (f"ide mcp {H('a')} devices=", "needs device ids"),
    (f"ide mcp {H('a')} devices=a,,b", "needs device ids"),
    (f"ide mcp {H('a')} devices=a extra", "expected"),
    (f"ide robot {H('a')}", "device, constellation or mcp"),
])
def test_malformed_entries_are_refused(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_tokens(line)


def test_mcp_tokens_never_register_on_ws_and_device_tokens_never_open_mcp() -> None:
    auth = authenticator(f"ide mcp {H('ide-secret')}; dev1 device {H('dev-secret')}")
    for client_type in ("device", "constellation", "mcp"):
        assert auth.check("ide", client_type, "ide-secret") is not None
    assert auth.check("dev1", "device", "dev-secret") is None
    assert auth.mcp_entry("dev-secret") is None
    assert auth.mcp_entry("wrong") is None
    found = auth.mcp_entry("ide-secret")
    assert found is not None and found.client_id == "ide"


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"),
    (None, None), ("", None), ("Bearer", None), ("Bearer   ", None), ("Basic abc", None),
    ("abc", None),
])
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_grants() -> None:
    nobody = authenticator("")
    assert not credentials_required(None, nobody)
    assert grant_for(None, None, nobody) == Grant(OPEN_CLIENT)
    assert credentials_required("key", nobody)
    assert grant_for(None, "key", nobody) is None
    assert grant_for("nope", "key", nobody) is None
    assert grant_for("key", "key", nobody) == Grant(API_KEY_CLIENT)

    auth = authenticator(f"lab mcp {H('lab')} devices=a; dev1 device {H('dev')}")
    assert credentials_required(None, auth)
    assert grant_for("lab", None, auth) == Grant("lab", frozenset({"a"}))
    assert grant_for("dev", None, auth) is None  # a device's token opens nothing here
    assert grant_for(None, None, auth) is None
    assert grant_for("key", "key", auth) == Grant(API_KEY_CLIENT)


def test_allow_lists() -> None:
    everything = Grant("ide")
    lab = Grant("lab", frozenset({"b", "a"}))
    assert device_allowed(everything, "z")
    assert device_allowed(lab, "a") and not device_allowed(lab, "z")
    assert visible(lab, ["z", "b", "a", "y"]) == ["b", "a"]
    assert visible(everything, ["z", "b"]) == ["z", "b"]
    assert requester_id(lab) == "mcp:lab"


def test_origins_and_hosts() -> None:
    assert split_list(" a, ,b ,") == ["a", "b"]
    settings = security_settings("gw.example:8000", "https://ide.example/, https://x:*")
    assert settings.enable_dns_rebinding_protection
    assert "gw.example:8000" in settings.allowed_hosts
    assert "127.0.0.1:*" in settings.allowed_hosts and "localhost" in settings.allowed_hosts
    assert "https://ide.example" in settings.allowed_origins
    assert "https://x:*" in settings.allowed_origins
    assert "http://localhost:*" in settings.allowed_origins
    assert not any("evil" in origin for origin in settings.allowed_origins)
