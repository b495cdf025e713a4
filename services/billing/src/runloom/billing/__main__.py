"""`python -m runloom.billing`: run one replica of the billing service.

`python -m runloom.billing reconcile --run RUN_ID` (or `--tenant TENANT_ID`) compares the ledger
with the committed reservations and prints the result as JSON; exit status 1 if they differ.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from runloom.billing.service import run
from runloom.runtime.config import Settings
from runloom.runtime.service import start


async def _reconcile(settings: Settings, run_id: str | None, tenant_id: str | None) -> int:
    from runloom.billing.ledger import reconcile
    from runloom.runtime import db

    pool = await db.create_pool(settings.effective_database_url, max_size=1)
    try:
        rec = await reconcile(pool, run_id=run_id, tenant_id=tenant_id)
    finally:
        await pool.close()
    json.dump(
        {
            "balanced": rec.balanced,
            "ledger_usd": format(rec.ledger_usd.normalize(), "f"),
            "committed_usd": format(rec.committed_usd.normalize(), "f"),
            "ledger_rows": rec.ledger_rows,
            "committed_reservations": rec.committed_reservations,
            "mismatched": rec.mismatched,
            "unrecorded": rec.unrecorded,
            "unreserved": rec.unreserved,
        },
        sys.stdout,
        indent=2,
    )
    print()
    return 0 if rec.balanced else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runloom.billing")
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("reconcile", help="compare the ledger with the committed reservations")
    which = rec.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", dest="run_id")
    which.add_argument("--tenant", dest="tenant_id")
    args = parser.parse_args()
    settings = Settings.from_env()
    if args.command == "reconcile":
        sys.exit(asyncio.run(_reconcile(settings, args.run_id, args.tenant_id)))
    start("billing", run)


if __name__ == "__main__":
    main()
