"""`runloom up`: start nats-server, PostgreSQL and every service (foundation issue)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="start the whole platform on embedded defaults")
    p.set_defaults(func=lambda args: 0)
