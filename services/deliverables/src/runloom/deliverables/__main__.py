"""`python -m runloom.deliverables`: run one replica of the deliverables service."""

from __future__ import annotations

from runloom.deliverables.service import run
from runloom.runtime.service import start


def main() -> None:
    start("deliverables", run)


if __name__ == "__main__":
    main()
