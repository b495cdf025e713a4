"""`python -m runloom.webhooks`: run one replica of the webhooks service."""

from __future__ import annotations

import asyncio

from runloom.runtime.config import Settings
from runloom.runtime.logging import setup_logging
from runloom.runtime.process import tune_gc
from runloom.runtime.telemetry import setup_tracing
from runloom.webhooks.service import run


def main() -> None:
    settings = Settings.from_env()
    setup_logging("webhooks", settings.log_level, settings.log_format)
    setup_tracing("webhooks", settings.otel_exporter)
    tune_gc()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
