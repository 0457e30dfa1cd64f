"""Serve the API with uvicorn on a background thread, beside (or without) the scheduler."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from aiposter.api.app import create_app
from aiposter.app import App

log = logging.getLogger("aiposter.api")


class ApiServer:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread):
        self.server, self.thread = server, thread

    @property
    def port(self) -> int:
        """The bound port (useful with ``api.port = 0``)."""
        return self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(application: App, daemon=None, startup_timeout: float = 15.0) -> ApiServer:
    """Start serving and return once the socket listens; RuntimeError if it cannot (e.g. port in use)."""
    api = application.cfg.api
    config = uvicorn.Config(create_app(application, daemon), host=api.host, port=api.port, log_config=None,
                            access_log=api.access_log, proxy_headers=True,
                            forwarded_allow_ips=api.trusted_proxies or "", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the API could not listen on {api.host}:{api.port} (see the log above)")
        time.sleep(0.02)
    running = ApiServer(server, thread)
    log.info("api.listening", extra={"fields": {"url": f"http://{api.host}:{running.port}"}})
    return running
