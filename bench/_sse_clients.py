"""SSE clients of one run in a process of their own, for (j): `bench._sse.Stream`s on uvloop.

python -m bench._sse_clients <port> <path> <first> <rest>

stdin, a line each: the API key (never on a command line); when to open the rest; the events
each stream must count. Opens <first> streams and prints "first" once each has its first
event; then opens <rest> more and prints "ready" once those have theirs; when every stream has
the run's terminal event, prints one JSON line: per stamped event, the latest receipt (ns) and
how many streams received it, and how many streams counted other than they must.

10,000 clients read in one Python process are 100,000 reads a second at 10 events/s: more than
one loop takes, so (j) spreads them over a few of these.
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvloop

from bench._sse import Stream


async def main(port: int, path: str, first: int, rest: int) -> None:
    last: dict[int, int] = {}
    seen: dict[int, int] = {}

    def on_stamp(stamp: int, now: int) -> None:
        if now > last.get(stamp, 0):
            last[stamp] = now
        seen[stamp] = seen.get(stamp, 0) + 1

    streams: list[Stream] = []
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    key = (await stdin.readline()).decode().strip()

    async def open_streams(count: int, word: str) -> None:
        opened = []
        for _ in range(count):
            s = Stream(on_stamp=on_stamp)
            await s.open(port, path, key)
            opened.append(s)
        await asyncio.gather(*(s.first.wait() for s in opened))
        streams.extend(opened)
        print(word, flush=True)

    await open_streams(first, "first")
    await stdin.readline()
    await open_streams(rest, "ready")
    events = int((await stdin.readline()).strip())
    await asyncio.gather(*(s.done.wait() for s in streams))
    wrong = sum(1 for s in streams if s.count != events)
    for s in streams:
        s.close()
    print(json.dumps({"last": last, "seen": seen, "wrong": wrong}), flush=True)


if __name__ == "__main__":
    port, path, first, rest = sys.argv[1:]
    uvloop.run(main(int(port), path, int(first), int(rest)))
