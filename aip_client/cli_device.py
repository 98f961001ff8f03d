"""``aip-device``: connect this machine to an AIP server as a device.

    aip-device --url ws://127.0.0.1:8000/ws --id my-laptop [--allow-shell]

Serves the built-in tools (``get_system_info``, ``list_directory``, ``read_file``,
``write_file``, and ``run_shell`` with ``--allow-shell``), heartbeats, pushes refreshed
device info on request or every ``--info-interval`` seconds, and reconnects forever
after any drop. Ctrl-C (or SIGTERM) stops it.

The file tools reach only the working directory (``--workdir``) and ``--allow-path``
directories. Exit codes: 0 stopped, 1 unexpected error, 2 bad usage (or a bad
``--allow-path``), and for refusals that reconnecting cannot fix 3 no WebSocket at the
URL, 4 credentials rejected, 5 the client_id held by another live connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from aip_client.cli_env import EnvDefaults
from aip_client.device import DeviceClient
from aip_client.file_tools import default_workdir
from aip_client.redact import RedactingFilter, redact
from aip_client.refusals import PermanentRefusal
from aip_client.tools import DEFAULT_OUTPUT_CAP, DEFAULT_SHELL_TIMEOUT, builtin_registry

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = EnvDefaults("AIP_DEVICE_")
    parser = argparse.ArgumentParser(
        prog="aip-device",
        description="Connect this machine to an AIP server as a device and serve its "
        "built-in tools. Every flag also reads AIP_DEVICE_<FLAG> from the environment.",
    )
    parser.add_argument("--url", default=env.text("URL", DEFAULT_URL),
                        help=f"the server's WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--id", dest="client_id", default=env.text("ID", None),
                        help="this device's client_id (default: the host name)")
    parser.add_argument("--token", default=env.text("TOKEN", None),
                        help="credentials, sent as ?token= on the URL")
    parser.add_argument("--allow-shell", action="store_true",
                        default=env.switch("ALLOW_SHELL"),
                        help="enable the run_shell tool (off by default)")
    parser.add_argument("--workdir", default=env.text("WORKDIR", None),
                        help="the device's working directory, created when missing: "
                        "relative paths resolve in it and run_shell starts in it "
                        "(default $XDG_DATA_HOME/aip-device/<id>, else "
                        "~/.local/share/aip-device/<id>)")
    parser.add_argument("--allow-path", action="append", metavar="DIR",
                        default=[p for p in (env.text("ALLOW_PATH") or "").split(os.pathsep)
                                 if p],
                        help="a directory the file tools may also reach, repeatable "
                        "(AIP_DEVICE_ALLOW_PATH: several, separated by ':'); by default "
                        "they reach only the working directory")
    parser.add_argument("--shell-timeout", type=float,
                        default=env.number("SHELL_TIMEOUT", DEFAULT_SHELL_TIMEOUT),
                        help="longest a shell command may run, in seconds (default 60)")
    parser.add_argument("--output-cap", type=int,
                        default=env.integer("OUTPUT_CAP", DEFAULT_OUTPUT_CAP),
                        help="bytes of stdout/stderr kept per shell command (default 64 KiB)")
    parser.add_argument("--heartbeat-interval", type=float,
                        default=env.number("HEARTBEAT_INTERVAL", 30),
                        help="seconds between heartbeats (default 30)")
    parser.add_argument("--info-interval", type=float,
                        default=env.number("INFO_INTERVAL", 0),
                        help="push refreshed device info every N seconds (default: off; "
                        "info is always pushed when the server asks)")
    parser.add_argument("--backoff-min", type=float, default=env.number("BACKOFF_MIN", 0.5),
                        help="first reconnect delay in seconds (default 0.5)")
    parser.add_argument("--backoff-max", type=float, default=env.number("BACKOFF_MAX", 30),
                        help="longest reconnect delay in seconds (default 30)")
    parser.add_argument("--log-level", default=env.choice("LOG_LEVEL", "info", LOG_LEVELS),
                        type=str.lower, choices=LOG_LEVELS)
    env.check(parser)
    args = parser.parse_args(argv)
    args.id_source = "--id" if args.client_id is not None else "the host name"
    if args.client_id is None:
        args.client_id = socket.gethostname()
    if not args.client_id:
        parser.error("--id must not be empty")
    for path in args.allow_path:
        if not os.path.isdir(os.path.expanduser(path)):
            parser.error(f"--allow-path {path}: not an existing directory")
    return args


async def serve(args: argparse.Namespace) -> None:
    tools = builtin_registry(allow_shell=args.allow_shell, shell_timeout=args.shell_timeout,
                             output_cap=args.output_cap,
                             workdir=args.workdir or default_workdir(args.client_id),
                             allow_paths=args.allow_path)
    assert tools.roots is not None
    client = DeviceClient(
        args.url,
        args.client_id,
        tools,
        token=args.token,
        heartbeat_interval=args.heartbeat_interval,
        info_interval=args.info_interval or None,
        backoff_min=args.backoff_min,
        backoff_max=args.backoff_max,
    )
    log = logging.getLogger("aip.device")
    log.info("device id %s (from %s)", args.client_id, args.id_source)
    log.info("device %s connecting to %s with tools: %s%s", args.client_id, args.url,
             ", ".join(n for n in tools.names() if args.allow_shell or n != "run_shell"),
             "" if args.allow_shell else " (run_shell off: --allow-shell enables it)")
    log.info("file tools confined to: %s (working directory %s)", tools.roots.describe(),
             tools.roots.workdir)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = asyncio.ensure_future(client.run())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    log.info("stopping")
    await client.stop()
    if runner.done() and not runner.cancelled():
        runner.result()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    except PermanentRefusal as exc:
        print(f"aip-device: {exc}", file=sys.stderr)
        sys.exit(int(exc.kind))
    except Exception as exc:
        print(f"aip-device: {redact(f'{exc}')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
