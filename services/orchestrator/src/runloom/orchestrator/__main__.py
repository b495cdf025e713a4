"""`python -m runloom.orchestrator`: run one replica of the orchestrator."""

from __future__ import annotations

from runloom.orchestrator.service import run
from runloom.runtime.service import start


def main() -> None:
    start("orchestrator", run)


if __name__ == "__main__":
    main()
