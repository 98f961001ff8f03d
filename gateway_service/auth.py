"""Client authentication: one token per client, bound to its ``client_id`` and type.

Tokens are stored hashed (SHA-256; tokens are random secrets, so a slow hash buys
nothing) in a tokens file or an environment variable, one entry per line::

    # client_id   client_type     token hash
    my-laptop     device          sha256:9f86d081884c7d659a2feaa0c55ad015...
    galaxy-1      constellation   sha256:60303ae22b998861bce3b28f33eec1be...
    ide-alice     mcp             sha256:2c26b46b68ffc68ff99b453c1d304134...  devices=lab-1,lab-2

A client presents its token in the WebSocket upgrade (``Authorization: Bearer ...``), as
``?token=`` on the ``/ws`` URL (what reference clients do), or in the register frame's
``metadata.auth_token``. Make an entry with ``python -m gateway_service.auth CLIENT_ID
CLIENT_TYPE`` (it prints a fresh token and the line to store).

Entries of type ``mcp`` open the gateway's MCP endpoint (``/mcp``, ``Authorization:
Bearer``) and nothing else: they never register on ``/ws``, and device or constellation
tokens never open ``/mcp``. An ``mcp`` entry may end with ``devices=ID[,ID...]``, the
only devices its client may see and drive; without it, every device.
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
#: The client type of tokens that open ``/mcp`` (never a ``/ws`` client).
MCP_CLIENT_TYPE = "mcp"
CLIENT_TYPES = frozenset({*ClientType, MCP_CLIENT_TYPE})
_DEVICES_PREFIX = "devices="


def hash_token(token: str) -> str:
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    client_id: str
    client_type: str
    token_hash: str
    #: For an ``mcp`` entry, the devices it may reach; ``None``: every device.
    devices: frozenset[str] | None = None


def _devices(column: str, source: str, number: int) -> frozenset[str]:
    if not column.startswith(_DEVICES_PREFIX):
        raise ValueError(f"{source}:{number}: the 4th column must be devices=ID[,ID...]")
    ids = frozenset(part.strip() for part in column.removeprefix(_DEVICES_PREFIX).split(","))
    if not ids or "" in ids:
        raise ValueError(f"{source}:{number}: devices= needs device ids, comma-separated")
    return ids


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
        if len(parts) not in (3, 4):
            raise ValueError(f"{source}:{number}: expected 'client_id client_type sha256:HEX'")
        client_id, client_type, token_hash = parts[:3]
        client_type = client_type.lower()
        if client_type not in CLIENT_TYPES:
            raise ValueError(f"{source}:{number}: client_type must be device, constellation "
                             "or mcp")
        digest = token_hash.removeprefix(HASH_PREFIX)
        if not token_hash.startswith(HASH_PREFIX) or len(digest) != 64:
            raise ValueError(f"{source}:{number}: the token hash must be sha256:<64 hex digits>")
        devices = None
        if len(parts) == 4:
            if client_type != MCP_CLIENT_TYPE:
                raise ValueError(f"{source}:{number}: only mcp entries take devices=")
            devices = _devices(parts[3], source, number)
        entries[client_id] = TokenEntry(client_id, client_type, token_hash.lower(), devices)
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
        # An mcp entry opens /mcp only: it registers no /ws client of any type.
        if entry is None or not valid or entry.client_type != client_type \
                or entry.client_type == MCP_CLIENT_TYPE:
            return refusal + ": invalid credentials"
        return None

    def mcp_entry(self, token: str) -> TokenEntry | None:
        """The ``mcp`` entry whose token ``token`` is, if any (device and constellation
        tokens are none). Every ``mcp`` entry is compared, in constant time each."""
        presented = hash_token(token)
        found = None
        for entry in self._entries.values():
            if entry.client_type != MCP_CLIENT_TYPE:
                continue
            if hmac.compare_digest(presented, entry.token_hash):
                found = entry
        return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[1].lower() not in CLIENT_TYPES:
        print("usage: python -m gateway_service.auth CLIENT_ID device|constellation|mcp",
              file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    print(f"token (give it to the client): {token}")
    print(f"tokens file line: {args[0]} {args[1].lower()} {hash_token(token)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
