"""`python -m runloom.lifecycle`: run one replica of the lifecycle service."""

from __future__ import annotations

from runloom.lifecycle.service import run
from runloom.runtime.service import start


def main() -> None:
    start("lifecycle", run)


if __name__ == "__main__":
    main()
