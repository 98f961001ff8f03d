"""``aip-session``: run one session-service replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aip_runtime import tracing
from aip_runtime.cli import bind_failure, listen_problem, load_settings
from aip_runtime.fd_limit import raise_fd_limit
from aip_runtime.gc_tuning import tune_gc
from aip_runtime.log_setup import configure_logging
from aip_runtime.malloc_tuning import tune_malloc
from session_service.security import link_exposure
from session_service.server import SessionService
from session_service.settings import SessionSettings

log = logging.getLogger("aip.session")


async def serve(settings: SessionSettings) -> None:
    """Serve until SIGTERM or SIGINT, then drain (a second signal cuts the drain short)."""
    service = SessionService(settings)
    try:
        await service.start()
    except (OSError, RuntimeError) as exc:
        # Undo what started (the store, its lease), then one line instead of a traceback.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await service.stop(grace=0, drain_timeout=0)
        if service.port == 0 and isinstance(exc, OSError):
            bind_failure("aip-session", settings.host, settings.port, "AIP_SESSION_",
                         listen_problem(settings.host, settings.port)
                         or "gRPC could not bind it")
        sys.exit(f"aip-session: {exc}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: cancelling running sessions now")
            service.skip_drain()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_signal)
    waiter = loop.create_task(service.wait())
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down: draining for up to %gs", settings.drain_timeout)
    stopper.cancel()
    await service.stop()
    waiter.cancel()


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(SessionSettings, sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level, settings.log_format, service="session",
                      fields={"replica_id": settings.replica_id})
    tracing.configure(settings.otlp_endpoint, "aip-session", settings.replica_id)
    busy = listen_problem(settings.host, settings.port)
    if busy is not None:
        bind_failure("aip-session", settings.host, settings.port, "AIP_SESSION_", busy)
    problem = link_exposure(settings.host, settings.link_token, settings.insecure_link)
    if problem:
        sys.exit(f"aip-session: {problem}")
    if settings.link_token is None and settings.insecure_link:
        log.warning("INSECURE: --insecure-link: the gateway link on %s:%d takes anyone "
                    "who reaches it for a gateway", settings.host, settings.port)
    raise_fd_limit()
    tune_gc()
    tune_malloc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
