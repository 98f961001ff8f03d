"""The operator console: a live view of devices and sessions, served by the gateway.

Server-rendered pages (Jinja) with a little script, updated by server-sent events; its
data comes from the replicas' public session API and the gateway's own registry, and it
keeps none of its own. :func:`mount` adds it to the gateway's FastAPI application:
pages at ``/`` and ``/sessions/{id}``, streams, JSON and actions under ``/console/``,
its assets under ``/console/static/``, and ``/docs`` with local Swagger UI assets.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from gateway_service.console.docs import add_docs
from gateway_service.console.render import STATIC
from gateway_service.console.routes import router
from gateway_service.console.state import Console

__all__ = ["Console", "mount"]


def mount(app: FastAPI, console: Console) -> None:
    app.state.console = console
    add_docs(app)  # its assets' mount is more specific than the console's: first
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(router)
