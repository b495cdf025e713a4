"""Gateway client commands: ask, runs, watch, docs, usage (console and CLI issue)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    return None
