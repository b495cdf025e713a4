// @ts-check
/** Reducer properties: whole, chunked, redelivered or out of order, the state is the same. */
import assert from "node:assert/strict";
import { test } from "node:test";

import { initialState, reduce, reduceAll } from "../reducer.js";
import { budgetStoppedRun, completedRun } from "./history.mjs";

/** Deterministic PRNG (mulberry32) so a failing seed can be replayed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** @param {any} x */
function deepFreeze(x) {
  if (x && typeof x === "object" && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x)) deepFreeze(v);
  }
  return x;
}

const HISTORIES = { completed: completedRun(), budget: budgetStoppedRun() };
const SEEDS = Number(process.env.REDUCER_SEEDS || 300);

for (const [name, events] of Object.entries(HISTORIES)) {
  const whole = reduceAll(initialState(), events);

  test(`${name}: any split into live chunks gives the same state`, () => {
    for (let seed = 1; seed <= SEEDS; seed++) {
      const r = rng(seed);
      let s = initialState();
      let i = 0;
      while (i < events.length) {
        const n = 1 + Math.floor(r() * 6);
        s = reduceAll(s, events.slice(i, i + n));
        i += n;
      }
      assert.deepEqual(s, whole, `seed ${seed}`);
    }
  });

  test(`${name}: redelivered duplicates and overlapping pages change nothing`, () => {
    for (let seed = 1; seed <= SEEDS; seed++) {
      const r = rng(seed);
      let s = initialState();
      let i = 0;
      while (i < events.length) {
        const back = Math.floor(r() * 4); // a reconnect replays a few events already seen
        const n = 1 + Math.floor(r() * 5);
        const from = Math.max(0, i - back);
        const chunk = events.slice(from, i + n);
        if (r() < 0.3) chunk.push(...chunk.slice(0, 2)); // and a page may repeat itself
        s = reduceAll(s, chunk);
        i += n;
      }
      assert.deepEqual(s, whole, `seed ${seed}`);
    }
  });

  test(`${name}: out-of-order delivery records a gap, and re-fetching fills it`, () => {
    for (let seed = 1; seed <= SEEDS; seed++) {
      const r = rng(seed);
      // Live delivery with local swaps, as two writers' events could race on a broken link.
      const live = [...events];
      for (let k = 0; k < live.length - 1; k++) {
        if (r() < 0.25) [live[k], live[k + 1]] = [live[k + 1], live[k]];
      }
      let s = initialState();
      let refetches = 0;
      for (const ev of live) {
        s = reduce(s, ev);
        if (s.gap) {
          // What the stream layer does: page the history after the last applied seq.
          assert.equal(s.gap.after_seq, s.last_seq);
          s = reduceAll(s, events.filter((x) => x.seq > s.last_seq));
          refetches += 1;
          assert.equal(s.gap, null);
        }
      }
      assert.deepEqual(s, whole, `seed ${seed} (${refetches} re-fetches)`);
    }
  });

  test(`${name}: reduce never changes the state it is given`, () => {
    let s = deepFreeze(initialState());
    for (const ev of events) {
      const before = JSON.stringify(s);
      const next = reduce(s, deepFreeze(structuredClone(ev)));
      assert.equal(JSON.stringify(s), before);
      s = deepFreeze(next);
    }
  });

  test(`${name}: one timeline row per event, in seq order`, () => {
    assert.deepEqual(
      whole.timeline.map((r) => r.seq),
      events.map((e) => e.seq),
    );
    assert.equal(whole.event_count, events.length);
  });
}

test("a completed run: plan, parallel sub-agents, sources with their citing claims, report", () => {
  const s = reduceAll(initialState(), HISTORIES.completed);
  assert.equal(s.status, "completed");
  assert.equal(s.partial, true);
  assert.deepEqual(s.missing, ["slides: renderer crashed again"]);
  assert.deepEqual(
    s.steps.map((x) => [x.step_id, x.status, x.parallel_group, x.agent]),
    [
      ["s1", "done", 1, "agent-1"],
      ["s2", "done", 1, "agent-2"],
      ["w", "done", null, null],
    ],
  );
  assert.equal(s.steps[1].source_count, 1); // counted from source.found (no count at completion)
  assert.equal(s.report_text, "# Generators\nA generator yields values [1]. send() resumes it [2].");
  assert.deepEqual(s.source_order, ["src1", "src2"]);
  assert.deepEqual(
    s.sources.src2.cited_by.map((c) => [c.claim_id, c.section]),
    [["c2", "Generators"]],
  );
  assert.equal(s.spent_usd, 0.0035); // u2 delivered twice, counted once
  assert.deepEqual(s.usage, { input_tokens: 120, output_tokens: 40, tool_calls: 1 });
  assert.equal(s.rate_limited, null); // cleared by the progress that followed it
  assert.deepEqual(s.answers, ["3.12"]);
  assert.equal(s.deliverables.report.status, "ready");
  assert.equal(s.deliverables.report.artifacts[0].file_name, "report.md");
  assert.deepEqual(
    [s.deliverables.slides.status, s.deliverables.slides.attempt, s.deliverables.slides.will_retry],
    ["failed", 3, false],
  );
  assert.equal(s.timeline.at(-1)?.spent_usd, 0.0035);
  assert.equal(s.timeline[0].spent_usd, 0);
});

test("failure states appear and clear as the run moves on", () => {
  const ev = HISTORIES.completed;
  const at = (/** @type {number} */ seq) => reduceAll(initialState(), ev.slice(0, seq));
  assert.equal(at(3).status, "waiting_clarification");
  assert.equal(at(3).clarification?.question, "Which Python version?");
  assert.equal(at(4).status, "running");
  assert.equal(at(4).clarification, null);
  assert.equal(at(9).rate_limited?.retry_after_s, 3);
  assert.equal(at(13).rate_limited?.provider, "openai"); // a tool result is not progress
  assert.equal(at(14).rate_limited, null); // step.progress is
  const slidesRetrying = at(29).deliverables.slides;
  assert.deepEqual([slidesRetrying.status, slidesRetrying.will_retry], ["failed", true]);
  assert.equal(at(31).deliverables.slides.status, "running");
});

test("a budget stop keeps what was produced and marks the rest not run", () => {
  const s = reduceAll(initialState(), HISTORIES.budget);
  assert.equal(s.status, "budget_stopped");
  assert.deepEqual(s.terminal?.data.kept, ["research of step 'Event loop'"]);
  assert.equal(s.budget_warning?.fraction, 0.8);
  assert.deepEqual(
    s.steps.map((x) => [x.step_id, x.status]),
    [
      ["a", "done"],
      ["b", "skipped"],
    ],
  );
});

test("nothing after the terminal event counts", () => {
  const events = HISTORIES.budget;
  const s = reduceAll(initialState(), events);
  const late = { ...events[3], seq: events.length + 1, id: "evt_late" };
  assert.equal(reduce(s, late), s);
});

test("a cancelled run: the request is visible before the answer", () => {
  const e = (/** @type {number} */ seq, /** @type {string} */ type, data = {}) => ({
    id: `e${seq}`, run_id: "r", tenant_id: "t", seq, type, time: "2026-01-01T00:00:00Z", producer: "p", data,
  });
  let s = reduceAll(initialState(), [e(1, "run.created", { question: "q" }), e(2, "cancel.requested", { reason: "user" })]);
  assert.equal(s.cancel_requested, true);
  assert.equal(s.status, "created");
  s = reduce(s, /** @type {any} */ (e(3, "run.cancelled", { reason: "user" })));
  assert.equal(s.status, "cancelled");
});
