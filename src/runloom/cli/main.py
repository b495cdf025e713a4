"""The `runloom` command.

Subcommands live in their own modules, each exposing `add_parser(subparsers)` that registers
its parser with `func=<callable(args) -> int>`:
- `up` (cli/up.py): start the whole platform on embedded defaults;
- `ask`, `runs`, `watch`, `docs`, `usage` (cli/client.py): talk to the gateway over HTTP/SSE;
- `webhooks` (cli/webhooks.py): the tenant's webhook endpoints and recent deliveries.
- `backup`, `restore` (cli/lifecycle.py): a home's data, online backup and restore.
"""

from __future__ import annotations

import argparse
import sys

from runloom.cli import client, lifecycle, up, webhooks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runloom",
        description="Runloom: runs that plan, research, cite and deliver.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    up.add_parser(sub)
    client.add_parser(sub)
    webhooks.add_parser(sub)
    lifecycle.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
