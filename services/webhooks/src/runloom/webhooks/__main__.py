"""`python -m runloom.webhooks`: run one replica of the webhooks service."""

from __future__ import annotations

from runloom.runtime.service import start
from runloom.webhooks.service import run


def main() -> None:
    start("webhooks", run)


if __name__ == "__main__":
    main()
