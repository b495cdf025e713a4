"""A slot held by a run that ended without its drive saying so is freed."""

from __future__ import annotations

from runloom.contracts.events import RunCancelled


async def test_a_slot_of_an_ended_run_is_freed_and_a_working_one_kept(orchestrator, driver, pool):
    ended = await driver.create("What is a generator?")
    await driver.log.append(ended, driver.tenant_id, RunCancelled(reason="gone"))
    working = await driver.create("What is a decorator?")
    for run_id in (ended, working):
        await pool.execute(
            "INSERT INTO run_queue(run_id, tenant_id, command_id, dispatched_at, dispatches)"
            " VALUES ($1, $2, $3, now() - interval '5 minutes', 1)",
            run_id,
            driver.tenant_id,
            f"start-{run_id}",
        )
    try:
        assert await orchestrator.dispatcher.reap() >= 1
        left = {r["run_id"] for r in await pool.fetch("SELECT run_id FROM run_queue")}
        assert ended not in left and working in left
    finally:
        await pool.execute("DELETE FROM run_queue WHERE run_id = ANY($1)", [ended, working])
