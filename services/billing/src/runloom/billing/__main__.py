"""`python -m runloom.billing`: run one replica of the billing service."""

from __future__ import annotations

import asyncio

from runloom.billing.service import run
from runloom.runtime.config import Settings
from runloom.runtime.logging import setup_logging
from runloom.runtime.telemetry import setup_tracing


def main() -> None:
    settings = Settings.from_env()
    setup_logging("billing", settings.log_level, settings.log_format)
    setup_tracing("billing", settings.otel_exporter)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
