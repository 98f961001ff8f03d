"""``aip-gateway``: run the gateway under uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic_settings import CliApp

from gateway_service.app import create_app
from gateway_service.settings import GatewaySettings


def uvicorn_config(settings: GatewaySettings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        loop="auto",
        ws="websockets-sansio",
        ws_max_size=settings.ws_max_size,
        ws_ping_interval=settings.ws_ping_interval or None,
        ws_ping_timeout=settings.ws_ping_timeout or None,
        ws_per_message_deflate=False,
        lifespan="on",
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level.lower() != "debug":
        # uvicorn logs every socket open and close; the gateway logs registrations instead.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    settings = CliApp.run(GatewaySettings, cli_args=sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level)
    uvicorn.Server(uvicorn_config(settings)).run()


if __name__ == "__main__":
    main()
