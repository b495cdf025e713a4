"""`python -m runloom.gateway`: serve the gateway with uvicorn."""

from __future__ import annotations

import uvicorn
from runloom.gateway._server import ServerLimits, protocol_class
from runloom.gateway.app import create_app
from runloom.runtime.config import Settings
from runloom.runtime.logging import setup_logging
from runloom.runtime.process import raise_open_files, tune_memory
from runloom.runtime.telemetry import setup_tracing


def main() -> None:
    settings = Settings.from_env()
    setup_logging("gateway", settings.log_level, settings.log_format)
    setup_tracing("gateway", settings.otel_exporter)
    tune_memory()
    raise_open_files()  # a socket per SSE client: up to the hard limit, not the soft 1,024
    limits = ServerLimits.from_env()
    uvicorn.run(
        create_app(settings),
        http=protocol_class(limits),
        timeout_keep_alive=int(limits.keep_alive_s),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
