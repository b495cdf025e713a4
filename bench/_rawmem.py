"""Raw nats-py memory per idle subscription, in a fresh process (RSS growth / subscription).

python -m bench._rawmem <nats_url> <count>  -> prints KiB per subscription
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys

import nats
import psutil


async def main(url: str, count: int) -> None:
    creds = os.environ.get("RUNLOOM_NATS_CREDENTIALS")  # the bench's admin seed (a path)
    nc = await nats.connect(url, nkeys_seed=creds) if creds else await nats.connect(url)
    await nc.flush()
    gc.collect()
    before = psutil.Process().memory_info().rss
    subs = [await nc.subscribe(f"raw.idle.{i % 20}") for i in range(count)]
    await nc.flush()
    gc.collect()
    after = psutil.Process().memory_info().rss
    print((after - before) / len(subs) / 1024)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
