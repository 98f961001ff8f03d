"""The services' command-line edge: settings from flags and environment, and the errors
an operator sees when they are wrong.

A bad flag or environment value ends the process with exit status 2 and one line per
problem, ``PROG: --flag (AIP_..._FLAG) 'value': what is accepted``, never a traceback;
a port that cannot be bound is one line too (:func:`listen_problem`).
"""

from __future__ import annotations

import errno
import re
import socket
import sys
from collections.abc import Collection, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsError

#: Exit status of a command given bad flags or environment values (as argparse's).
USAGE_EXIT = 2

#: Longest value quoted back in an error line; secrets are never field-level errors, but
#: a pasted blob should not fill the terminal either.
_QUOTE_LIMIT = 60

S = TypeVar("S", bound=BaseSettings)


class AnyCase(StrEnum):
    """A choice of lower-case words, accepted in any case (``INFO`` as ``info``)."""

    @classmethod
    def _missing_(cls, value: object) -> AnyCase | None:
        if isinstance(value, str):
            for member in cls:
                if member.value == value.strip().lower():
                    return member
        return None


class LogLevel(AnyCase):
    """``--log-level``: accepted in any case (``INFO`` as ``info``)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(AnyCase):
    """``--log-format``: ``text`` lines for people, ``json`` lines for log collectors."""

    TEXT = "text"
    JSON = "json"


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(prefix: str, field: str) -> str:
    return (prefix + field).upper()


def _quoted(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= _QUOTE_LIMIT else shown[: _QUOTE_LIMIT - 3] + "..."


def _sentence(message: str) -> str:
    message = message.removeprefix("Value error, ").strip()
    return message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message


_LEADING_FLAG = re.compile(r"^--([a-z0-9][a-z0-9-]*)")


def validation_lines(
    error: ValidationError, env_prefix: str, fields: Collection[str] = ()
) -> list[str]:
    """One line per problem of ``error``: the flag and its environment variable, the
    value given and what pydantic accepts there; a problem of the whole settings (a
    model validator's) as its own message, which names its flags (the environment
    variable of the first is added when it is one of ``fields``)."""
    lines: list[str] = []
    for problem in error.errors(include_url=False):
        location = problem.get("loc", ())
        message = " ".join(_sentence(problem.get("msg", "invalid")).split())
        if location and isinstance(location[0], str):
            field = location[0]
            given = problem.get("input")
            shown = "" if given is None or isinstance(given, dict) else f" {_quoted(given)}"
            lines.append(f"{flag_name(field)} ({env_name(env_prefix, field)}){shown}: {message}")
        else:
            lead = _LEADING_FLAG.match(message)
            field = lead.group(1).replace("-", "_") if lead else ""
            if lead and field in fields:
                message = f"{lead.group(0)} ({env_name(env_prefix, field)}){message[lead.end() :]}"
            lines.append(message)
    return lines


def usage_error(prog: str, lines: Sequence[str]) -> NoReturn:
    """Print ``lines`` as ``prog: line`` on stderr and exit with :data:`USAGE_EXIT`."""
    for line in lines:
        print(f"{prog}: {line}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(USAGE_EXIT)


def load_settings(settings_class: type[S], argv: Sequence[str]) -> S:
    """``settings_class`` from ``argv`` and its environment variables; ``--help`` prints
    the help and exits 0, anything wrong exits through :func:`usage_error`."""
    config = settings_class.model_config
    prog = str(config.get("cli_prog_name") or settings_class.__name__)
    prefix = str(config.get("env_prefix") or "")
    try:
        return CliApp.run(settings_class, cli_args=list(argv), cli_exit_on_error=False)
    except ValidationError as exc:
        usage_error(prog, validation_lines(exc, prefix, settings_class.model_fields))
    except SettingsError as exc:
        # Unknown flags, a flag without its value, a malformed JSON value: argparse's
        # message, without the usage block around it.
        message = " ".join(str(exc).split()).removeprefix("error parsing CLI: ")
        usage_error(prog, [f"{message} (see --help)"])


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` now (``None``: it could), found
    by binding a socket as :func:`listening_socket` does, then closing it. gRPC reports
    only that binding failed, and logs that from its core, so replicas ask first."""
    try:
        listening_socket(host, port).close()
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    except OSError as exc:
        return bind_error_text(exc)
    return None


def bind_error_text(exc: OSError) -> str:
    """A bind error in an operator's words."""
    if exc.errno == errno.EADDRINUSE:
        return "the port is already in use (another process listens on it)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no interface of this machine has that address"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (the first address ``host`` resolves to), as
    a server would bind it: ``SO_REUSEADDR``, so a restart is not refused while old
    connections linger in TIME_WAIT, and no ``SO_REUSEPORT``, so a second server on the
    same port fails here instead of sharing it.

    :raises OSError: the address cannot be resolved or bound.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def bind_failure(prog: str, host: str, port: int, env_prefix: str, reason: str) -> NoReturn:
    """Exit with one line naming the address, the flags that set it and why binding it
    failed (status 1: the settings were valid, the machine refused)."""
    print(
        f"{prog}: cannot listen on {host}:{port}: {reason} (set --port / "
        f"{env_name(env_prefix, 'port')} or --host / {env_name(env_prefix, 'host')})",
        file=sys.stderr,
    )
    sys.stderr.flush()
    raise SystemExit(1)


def check_readable(path: Path | None, flag: str) -> None:
    """Refuse a file flag whose file cannot be read now, rather than at first use.

    :raises ValueError: naming ``flag``, the path and why.
    """
    if path is None:
        return
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from None
