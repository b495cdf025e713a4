"""Reading a run on a 3-node cluster through a node just back from a pause.

A node SIGSTOPped while the run grew answers direct gets from its old state for a while after
SIGCONT. Every read through it must still show the whole run: the event log's (history, tail,
next after a position) and the gateway's replay, where a part the archive has not written yet
(a second archiver still holds it) must come from the stream, never as a reset frame saying
that events the store holds are gone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runloom.contracts.events import RunCreated, StepStarted
from runloom.contracts.ids import new_id
from runloom.devkit.cluster import NatsCluster
from runloom.gateway._history import Epoch, History
from runloom.gateway.store.archive import PgArchive, archive_batch
from runloom.runtime import bus
from runloom.runtime.eventlog import TRANSIENT_ERRORS, EventLog


async def test_reads_through_a_node_back_from_a_pause_are_whole_and_never_reset(
    nats_cluster: NatsCluster, cluster_js: Any, pool: Any
) -> None:
    writer = EventLog(cluster_js, "w", publish_timeout=1.0)
    run_id = new_id("run")
    await writer.append(run_id, "t1", RunCreated(question="q"))
    await writer.append(run_id, "t1", StepStarted(step_id="s0"))
    cursor = await writer.tail(run_id)  # what a client received last: seq 2
    info = await cluster_js.stream_info("RUN_EVENTS")
    paused = next(n for n in nats_cluster.nodes if n.name != info.cluster.leader)
    paused.pause()
    try:
        for i in range(1, 40):
            await asyncio.wait_for(writer.append(run_id, "t1", StepStarted(step_id=f"s{i}")), 30)
        stored = await _read_all(writer, run_id)
        assert [se.event.seq for se in stored] == list(range(1, 42))
        await archive_batch(
            pool, [(se.event, se.raw, se.stream_seq) for se in stored if se.event.seq != 20]
        )
        # Long enough for the others to close their routes to it (ping 2 s, 2 outstanding).
        await asyncio.sleep(7)
    finally:
        paused.resume()

    nc = await bus.connect(
        paused.url,
        "gateway-on-the-paused-node",
        credentials=nats_cluster.credential("gateway"),
        ca=nats_cluster.ca,
        max_reconnect_attempts=0,
    )
    try:
        js = nc.jetstream()
        archive = PgArchive(pool)
        log = EventLog(js, "gateway", archive=archive)
        history = History(log, archive, Epoch(js))
        wrong: list[str] = []
        whole = unanswered = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15.0
        while whole < 10 and loop.time() < deadline:
            try:
                events = await log.events(run_id)
                tail = await log.tail(run_id)
                after = await log.first(run_id, cursor.stream_seq)
                frames = [f async for f in history.replay(run_id, 2, cursor.stream_seq)]
                # What the SSE stream replays first: it may end early, never with a reset.
                quick = history.replay(run_id, 2, cursor.stream_seq, any_replica=True)
                early = [(f.type, f.seq) async for f in quick]
            except TRANSIENT_ERRORS:
                unanswered += 1  # the node cannot reach the leader yet: it says so (503)
                continue
            replayed = [(f.type, f.seq) for f in frames]
            if (
                len(events) != 41
                or tail.run_seq != 41
                or after is None
                or [s for _, s in replayed] != list(range(3, 42))
                or any(t == "reset" for t, _ in replayed + early)
                or [s for _, s in early] != list(range(3, 3 + len(early)))
            ):
                wrong.append(
                    f"events {len(events)}, tail {tail.run_seq}, next {after and after.event.seq}"
                    f", replay {[*replayed[:3], '...', *replayed[-2:]]}, early {early[-2:]}"
                )
            else:
                whole += 1
        assert wrong == [], f"{len(wrong)} short views (and {whole} whole): {wrong[:3]}"
        assert whole == 10, f"{unanswered} reads unanswered, {whole} whole"
    finally:
        await nc.close()


async def _read_all(log: EventLog, run_id: str) -> list[Any]:
    """The run as stored. A direct get may reach the paused node (it still holds its place among
    the responders until the others drop its routes) and time out: a transient error, which a
    reader retries, as the gateway's client does after its 503."""
    for _ in range(6):
        try:
            return [se async for se in log.read(run_id)]
        except TRANSIENT_ERRORS:
            continue
    raise AssertionError(f"run {run_id} could not be read in 6 tries")
