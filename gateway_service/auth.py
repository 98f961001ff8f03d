"""Client authentication: one token per client, bound to its ``client_id`` and type.

Tokens are stored hashed (SHA-256; tokens are random secrets, so a slow hash buys
nothing) in a tokens file or an environment variable, one entry per line::

    # client_id   client_type     token hash
    my-laptop     device          sha256:9f86d081884c7d659a2feaa0c55ad015...
    galaxy-1      constellation   sha256:60303ae22b998861bce3b28f33eec1be...

A client presents its token in the WebSocket upgrade (``Authorization: Bearer ...``), as
``?token=`` on the ``/ws`` URL (what reference clients do), or in the register frame's
``metadata.auth_token``. Make an entry with ``python -m gateway_service.auth CLIENT_ID
CLIENT_TYPE`` (it prints a fresh token and the line to store).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from aip_wire.vocab import ClientType

HASH_PREFIX = "sha256:"


def hash_token(token: str) -> str:
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    client_id: str
    client_type: str
    token_hash: str


def parse_tokens(text: str, source: str = "tokens") -> dict[str, TokenEntry]:
    """Parse entries, one per line (or separated by ``;``); ``#`` starts a comment.

    :raises ValueError: a malformed entry, naming its source and line.
    """
    entries: dict[str, TokenEntry] = {}
    for number, raw in enumerate(text.replace(";", "\n").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{source}:{number}: expected 'client_id client_type sha256:HEX'")
        client_id, client_type, token_hash = parts
        if client_type.lower() not in frozenset(ClientType):
            raise ValueError(f"{source}:{number}: client_type must be device or constellation")
        digest = token_hash.removeprefix(HASH_PREFIX)
        if not token_hash.startswith(HASH_PREFIX) or len(digest) != 64:
            raise ValueError(f"{source}:{number}: the token hash must be sha256:<64 hex digits>")
        entries[client_id] = TokenEntry(client_id, client_type.lower(), token_hash.lower())
    return entries


class Authenticator:
    """Decides whether a registration's credentials are valid."""

    def __init__(self, entries: dict[str, TokenEntry]) -> None:
        self._entries = entries

    @classmethod
    def from_settings(cls, tokens_file: Path | None, tokens: str | None) -> Authenticator:
        entries: dict[str, TokenEntry] = {}
        if tokens_file is not None:
            entries.update(parse_tokens(tokens_file.read_text(), str(tokens_file)))
        if tokens:
            entries.update(parse_tokens(tokens, "AIP_GATEWAY_TOKENS"))
        return cls(entries)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def check(self, client_id: str, client_type: str, token: str | None) -> str | None:
        """``None`` when the token is valid for this identity, else the refusal reason.

        The reason never tells whether the ``client_id`` exists.
        """
        if not self.enabled:
            return None
        refusal = f"Authentication failed for client '{client_id}'"
        if not token:
            return refusal + ": no token (use Authorization: Bearer, ?token= or " \
                "metadata.auth_token)"
        entry = self._entries.get(client_id)
        presented = hash_token(token)
        expected = entry.token_hash if entry is not None else hash_token(secrets.token_hex(16))
        valid = hmac.compare_digest(presented, expected)
        if entry is None or not valid or entry.client_type != client_type:
            return refusal + ": invalid credentials"
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[1].lower() not in frozenset(ClientType):
        print("usage: python -m gateway_service.auth CLIENT_ID device|constellation",
              file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    print(f"token (give it to the client): {token}")
    print(f"tokens file line: {args[0]} {args[1].lower()} {hash_token(token)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
