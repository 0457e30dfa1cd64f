"""Serve the API with uvicorn on a background thread, beside (or without) the scheduler."""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import parse_qsl, urlencode

import uvicorn

from aiposter.api.app import create_app
from aiposter.app import App

log = logging.getLogger("aiposter.api")


# Query parameters that are secrets (OAuth codes and states on the callback, tokens anywhere).
SECRET_PARAMS = frozenset({"code", "state", "token", "access_token", "refresh_token", "id_token"})


def redact_query(path: str) -> str:
    """``path?code=abc&x=1`` -> ``path?code=REDACTED&x=1``."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    return base + "?" + urlencode([(k, "REDACTED" if k.lower() in SECRET_PARAMS else v) for k, v in pairs])


class RedactQuery(logging.Filter):
    """Keep OAuth codes and states out of uvicorn's access log (its args: client, method, path, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


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
                            access_log=api.access_log, proxy_headers=True, server_header=False,
                            forwarded_allow_ips=api.trusted_proxies or "", lifespan="off")
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())
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
