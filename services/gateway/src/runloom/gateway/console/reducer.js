// @ts-check
/**
 * The console's one source of state: a pure fold over a run's events (docs/architecture.md,
 * "One fold per run").
 *
 * `reduce(state, event)` never changes `state`; it returns a new state that shares every
 * slice the event did not touch (so a view can compare slices by reference). The same
 * function serves history pages and the live stream, so a reload, a reconnect or a
 * redelivery shows exactly the same thing:
 *   - an event at or below `last_seq` is a redelivery and is ignored;
 *   - an event beyond `last_seq + 1` is not applied: the state records the gap, and the
 *     stream layer re-fetches the missing events (`?format=json&after=`) and feeds them;
 *   - nothing after the terminal event counts.
 * The transitions mirror `runloom.runtime.runstate.fold` (the Python fold the CLI uses).
 */

/** @typedef {import("./types.js").RunEvent} RunEvent */
/** @typedef {import("./types.js").SourceFound} SourceFound */
/** @typedef {import("./types.js").RateLimited} RateLimited */
/** @typedef {import("./types.js").RunQueued} RunQueued */
/** @typedef {import("./types.js").ClarificationRequested} ClarificationRequested */
/** @typedef {import("./types.js").BudgetWarning} BudgetWarning */
/** @typedef {import("./types.js").ArtifactRef} ArtifactRef */
/** @typedef {import("./types.js").ContentModel} ContentModel */

/**
 * @typedef {"created"|"queued"|"running"|"waiting_clarification"|"completed"|"failed"|"cancelled"|"budget_stopped"} RunStatus
 * @typedef {"pending"|"running"|"done"|"failed"|"skipped"} StepStatus
 * @typedef {"requested"|"running"|"ready"|"failed"} DeliverableStatus
 *
 * @typedef {object} StepState
 * @property {string} step_id
 * @property {string} title
 * @property {string} kind
 * @property {number | null} parallel_group
 * @property {StepStatus} status
 * @property {string | null} error
 * @property {number} source_count
 * @property {string | null} agent      sub-agent running the step (step.started)
 * @property {string | null} progress   latest step.progress message
 * @property {number | null} fraction   latest step.progress fraction (0..1)
 *
 * @typedef {object} CitingClaim
 * @property {string} claim_id
 * @property {string} text
 * @property {string} section
 * @property {string} passage           the passage of the source the claim cites
 *
 * @typedef {object} SourceState
 * @property {string} source_id
 * @property {string} title
 * @property {string} passage
 * @property {string | null} url
 * @property {string | null} step_id
 * @property {CitingClaim[]} cited_by
 *
 * @typedef {object} DeliverableState
 * @property {string} kind
 * @property {string} job_id
 * @property {DeliverableStatus} status
 * @property {number} attempt
 * @property {number | null} max_attempts
 * @property {boolean} will_retry
 * @property {string | null} retry_at
 * @property {string | null} message
 * @property {number | null} fraction
 * @property {ArtifactRef[]} artifacts
 * @property {string | null} error
 *
 * @typedef {object} TimelineRow
 * @property {number} seq
 * @property {string} id
 * @property {string} type
 * @property {string} time
 * @property {string} producer
 * @property {number} spent_usd        cost so far, after this event
 * @property {Record<string, any>} data
 *
 * @typedef {object} Terminal
 * @property {string} type
 * @property {number} seq
 * @property {string} time
 * @property {Record<string, any>} data
 *
 * @typedef {object} Gap
 * @property {number} after_seq        the last applied seq
 * @property {number} got_seq          the seq that arrived instead of after_seq + 1
 *
 * @typedef {object} RunState
 * @property {string | null} run_id
 * @property {RunStatus} status
 * @property {string | null} question
 * @property {string | null} title
 * @property {string | null} skill
 * @property {number | null} budget_usd
 * @property {Record<string, any>} options
 * @property {string | null} created_at
 * @property {StepState[]} steps
 * @property {Record<string, SourceState>} sources
 * @property {string[]} source_order
 * @property {Record<number, string>} report_parts
 * @property {string} report_text
 * @property {ContentModel | null} content
 * @property {string | null} content_hash
 * @property {Record<string, DeliverableState>} deliverables
 * @property {number} spent_usd
 * @property {{input_tokens: number, output_tokens: number, tool_calls: number}} usage
 * @property {string[]} usage_ids
 * @property {ClarificationRequested | null} clarification
 * @property {number | null} clarification_seq   seq of the pending clarification.requested
 * @property {string[]} answers
 * @property {RunQueued | null} queued   where the run waits to start, until it starts
 * @property {RateLimited | null} rate_limited
 * @property {BudgetWarning | null} budget_warning
 * @property {boolean} billing_waiting
 * @property {boolean} cancel_requested
 * @property {boolean} partial
 * @property {string[]} missing
 * @property {Terminal | null} terminal
 * @property {number} last_seq
 * @property {number} event_count
 * @property {number} started_count
 * @property {TimelineRow[]} timeline
 * @property {Gap | null} gap
 */

export const TERMINAL_TYPES = Object.freeze([
  "run.completed",
  "run.failed",
  "run.cancelled",
  "run.budget_stopped",
]);

/** @type {Record<string, RunStatus>} */
const TERMINAL_STATUS = {
  "run.completed": "completed",
  "run.failed": "failed",
  "run.cancelled": "cancelled",
  "run.budget_stopped": "budget_stopped",
};

/** @returns {RunState} */
export function initialState() {
  return {
    run_id: null,
    status: "created",
    question: null,
    title: null,
    skill: null,
    budget_usd: null,
    options: {},
    created_at: null,
    steps: [],
    sources: {},
    source_order: [],
    report_parts: {},
    report_text: "",
    content: null,
    content_hash: null,
    deliverables: {},
    spent_usd: 0,
    usage: { input_tokens: 0, output_tokens: 0, tool_calls: 0 },
    usage_ids: [],
    clarification: null,
    clarification_seq: null,
    answers: [],
    queued: null,
    rate_limited: null,
    budget_warning: null,
    billing_waiting: false,
    cancel_requested: false,
    partial: false,
    missing: [],
    terminal: null,
    last_seq: 0,
    event_count: 0,
    started_count: 0,
    timeline: [],
    gap: null,
  };
}

/**
 * A state from the gateway's reset snapshot (the Python fold's state, sent when part of the
 * history is gone from both the stream and the archive). The timeline restarts after it.
 * @param {Record<string, any>} snap
 * @param {string} reason
 * @returns {RunState}
 */
export function fromSnapshot(snap, reason) {
  const s = initialState();
  const terminal = snap.terminal || null;
  /** @type {Record<string, SourceState>} */
  const sources = {};
  for (const [id, src] of Object.entries(snap.sources || {})) {
    const x = /** @type {Record<string, any>} */ (src);
    sources[id] = { source_id: id, title: x.title, passage: x.passage, url: x.url ?? null, step_id: x.step_id ?? null, cited_by: [] };
  }
  return {
    ...s,
    run_id: snap.run_id ?? null,
    status: snap.status || "created",
    question: snap.question ?? null,
    title: snap.title ?? null,
    skill: snap.skill ?? null,
    budget_usd: snap.budget_usd ?? null,
    options: snap.options || {},
    steps: (snap.steps || []).map((/** @type {Record<string, any>} */ st) => ({
      step_id: st.step_id,
      title: st.title,
      kind: st.kind || "research",
      parallel_group: st.parallel_group ?? null,
      status: st.status || "pending",
      error: st.error ?? null,
      source_count: st.source_count || 0,
      agent: null,
      progress: null,
      fraction: null,
    })),
    sources,
    source_order: Object.keys(sources),
    report_parts: snap.report_text ? { 0: snap.report_text } : {},
    report_text: snap.report_text || "",
    content_hash: snap.content_hash ?? null,
    deliverables: Object.fromEntries(
      Object.entries(snap.deliverables || {}).map(([k, d]) => [k, { retry_at: null, message: null, fraction: null, max_attempts: null, error: null, artifacts: [], ...d }]),
    ),
    spent_usd: snap.spent_usd || 0,
    usage: { input_tokens: 0, output_tokens: 0, tool_calls: 0, ...(snap.usage || {}) },
    clarification: snap.clarification ?? null,
    queued: snap.queued ?? null,
    rate_limited: snap.rate_limited ?? null,
    billing_waiting: Boolean(snap.billing_waiting),
    cancel_requested: Boolean(snap.cancel_requested),
    partial: Boolean(snap.partial),
    missing: snap.missing || [],
    terminal: terminal ? { type: terminal.type, seq: terminal.seq, time: terminal.time, data: terminal.data || {} } : null,
    last_seq: snap.last_seq || 0,
    event_count: snap.event_count || 0,
    started_count: snap.started_count || 0,
    timeline: [
      { seq: snap.last_seq || 0, id: "reset", type: "reset", time: new Date().toISOString(), producer: "gateway", spent_usd: snap.spent_usd || 0, data: { reason } },
    ],
  };
}

/**
 * The state after one event. Pure: `state` is never changed.
 * @param {RunState} state
 * @param {RunEvent} event
 * @returns {RunState}
 */
export function reduce(state, event) {
  if (event.seq <= state.last_seq || state.terminal !== null) return state;
  if (event.seq > state.last_seq + 1) {
    if (state.gap && state.gap.got_seq <= event.seq) return state;
    return { ...state, gap: { after_seq: state.last_seq, got_seq: event.seq } };
  }
  /** @type {RunState} */
  const s = { ...state, gap: null, last_seq: event.seq, event_count: state.event_count + 1 };
  if (s.run_id === null) s.run_id = event.run_id;
  apply(s, event);
  if (TERMINAL_STATUS[event.type] !== undefined) {
    s.status = TERMINAL_STATUS[event.type];
    s.terminal = { type: event.type, seq: event.seq, time: event.time, data: /** @type {Record<string, any>} */ (event.data) };
    s.clarification = null;
    s.clarification_seq = null;
    s.queued = null;
    s.rate_limited = null;
    s.billing_waiting = false;
    s.steps = s.steps.map((st) =>
      event.type !== "run.completed" && (st.status === "pending" || st.status === "running")
        ? { ...st, status: /** @type {StepStatus} */ ("skipped"), error: stopReason(event.type) }
        : st,
    );
  }
  s.timeline = [
    ...state.timeline,
    {
      seq: event.seq,
      id: event.id,
      type: event.type,
      time: event.time,
      producer: event.producer,
      spent_usd: s.spent_usd,
      data: /** @type {Record<string, any>} */ (event.data || {}),
    },
  ];
  return s;
}

/**
 * Fold many events (a history page or a live chunk).
 * @param {RunState} state
 * @param {Iterable<RunEvent>} events
 * @returns {RunState}
 */
export function reduceAll(state, events) {
  let s = state;
  for (const ev of events) s = reduce(s, ev);
  return s;
}

/** @param {string} type */
function stopReason(type) {
  if (type === "run.cancelled") return "not run: the run was cancelled";
  if (type === "run.budget_stopped") return "not run: the budget was used up";
  return "not run: the run failed";
}

/** @param {RunState} s */
function running(s) {
  if (s.status === "created" || s.status === "queued" || s.status === "waiting_clarification") s.status = "running";
}

/**
 * Replace (or append) one step, copy-on-write.
 * @param {RunState} s
 * @param {string} stepId
 * @param {string | null | undefined} title
 * @param {(step: StepState) => Partial<StepState>} change
 */
function updateStep(s, stepId, title, change) {
  const i = s.steps.findIndex((st) => st.step_id === stepId);
  const base =
    i >= 0
      ? s.steps[i]
      : {
          step_id: stepId,
          title: title || stepId,
          kind: "research",
          parallel_group: null,
          status: /** @type {StepStatus} */ ("pending"),
          error: null,
          source_count: 0,
          agent: null,
          progress: null,
          fraction: null,
        };
  const next = { ...base, ...change(base) };
  s.steps = i >= 0 ? s.steps.map((st, j) => (j === i ? next : st)) : [...s.steps, next];
}

/**
 * @param {RunState} s
 * @param {{kind: string, job_id: string}} d
 */
function deliverable(s, d) {
  const prev = s.deliverables[d.kind];
  if (prev && prev.job_id === d.job_id) return prev;
  return /** @type {DeliverableState} */ ({
    kind: d.kind,
    job_id: d.job_id,
    status: "requested",
    attempt: 0,
    max_attempts: null,
    will_retry: false,
    retry_at: null,
    message: null,
    fraction: null,
    artifacts: [],
    error: null,
  });
}

/**
 * @param {RunState} s
 * @param {DeliverableState} dv
 */
function putDeliverable(s, dv) {
  s.deliverables = { ...s.deliverables, [dv.kind]: dv };
}

/**
 * Sources with the claims that cite them, from the stored content model.
 * @param {RunState} s
 * @param {ContentModel} content
 */
function citeSources(s, content) {
  /** @type {Record<string, CitingClaim[]>} */
  const citing = {};
  for (const section of content.sections || []) {
    for (const claim of section.claims || []) {
      for (const c of claim.citations || []) {
        (citing[c.source_id] ||= []).push({
          claim_id: claim.claim_id,
          text: claim.text,
          section: section.title,
          passage: c.passage,
        });
      }
    }
  }
  const sources = { ...s.sources };
  const order = [...s.source_order];
  for (const src of content.sources || []) {
    const prev = sources[src.source_id];
    if (!prev) order.push(src.source_id);
    sources[src.source_id] = {
      source_id: src.source_id,
      title: prev ? prev.title : src.title,
      passage: prev ? prev.passage : src.text,
      url: (prev && prev.url) || src.url || null,
      step_id: prev ? prev.step_id : null,
      cited_by: citing[src.source_id] || [],
    };
  }
  for (const id of Object.keys(citing)) {
    if (sources[id] && !(content.sources || []).some((x) => x.source_id === id)) {
      sources[id] = { ...sources[id], cited_by: citing[id] };
    }
  }
  s.sources = sources;
  // Number sources as the report does (the content model's order), the others after them.
  const reported = (content.sources || []).map((x) => x.source_id);
  const inReport = new Set(reported);
  s.source_order = [...reported, ...order.filter((id) => !inReport.has(id))];
}

/**
 * One event's transition, on a fresh shallow copy `s`. Each case narrows `ev` by its `type`,
 * so `ev.data` has the generated payload type: a contract change that breaks this fails `tsc`.
 * @param {RunState} s
 * @param {RunEvent} ev
 */
function apply(s, ev) {
  switch (ev.type) {
    case "run.created": {
      const d = ev.data;
      s.question = d.question;
      s.skill = d.skill ?? "research_report";
      s.budget_usd = d.budget_usd ?? null;
      s.options = { ...(d.options || {}) };
      s.title = d.title || s.title;
      s.created_at = ev.time;
      break;
    }
    case "run.queued":
      s.queued = ev.data;
      if (s.status === "created" || s.status === "running") s.status = "queued";
      break;
    case "run.started":
      s.started_count += 1;
      s.queued = null;
      if (s.clarification === null) running(s);
      break;
    case "plan.proposed":
    case "plan.revised": {
      const old = new Map(s.steps.map((st) => [st.step_id, st]));
      /** @type {StepState[]} */
      const steps = ev.data.steps.map((p) => {
        const prev = old.get(p.step_id);
        return {
          step_id: p.step_id,
          title: p.title || p.step_id,
          kind: p.kind || "research",
          parallel_group: p.parallel_group ?? null,
          status: prev ? prev.status : "pending",
          error: prev ? prev.error : null,
          source_count: prev ? prev.source_count : 0,
          agent: prev ? prev.agent : null,
          progress: prev ? prev.progress : null,
          fraction: prev ? prev.fraction : null,
        };
      });
      // A revision never forgets a step that already ran: it stays, after the new plan.
      const kept = new Set(steps.map((st) => st.step_id));
      for (const st of s.steps) if (!kept.has(st.step_id) && st.status !== "pending") steps.push(st);
      s.steps = steps;
      if (s.clarification === null) running(s);
      break;
    }
    case "step.started": {
      const d = ev.data;
      updateStep(s, d.step_id, d.title, () => ({ status: "running", error: null, agent: d.agent ?? null }));
      s.rate_limited = null;
      if (s.clarification === null) running(s);
      break;
    }
    case "step.progress": {
      const d = ev.data;
      updateStep(s, d.step_id, null, (st) => ({
        status: st.status === "pending" ? "running" : st.status,
        progress: d.message,
        fraction: d.fraction ?? null,
      }));
      s.rate_limited = null;
      break;
    }
    case "step.completed": {
      const d = ev.data;
      updateStep(s, d.step_id, null, (st) => ({
        status: "done",
        error: null,
        fraction: 1,
        source_count: d.source_count ?? st.source_count,
      }));
      s.rate_limited = null;
      break;
    }
    case "step.failed": {
      const d = ev.data;
      updateStep(s, d.step_id, null, () => ({
        status: d.reason === "skipped" ? "skipped" : "failed",
        error: d.error,
      }));
      s.rate_limited = null;
      break;
    }
    case "message.delta": {
      const d = ev.data;
      s.rate_limited = null;
      if (d.stream !== "report") break;
      const index = Number(d.index);
      if (Object.prototype.hasOwnProperty.call(s.report_parts, index)) break;
      s.report_parts = { ...s.report_parts, [index]: d.text || "" };
      s.report_text = Object.keys(s.report_parts)
        .map(Number)
        .sort((a, b) => a - b)
        .map((i) => s.report_parts[i])
        .join("");
      break;
    }
    case "source.found": {
      const d = ev.data;
      const prev = s.sources[d.source_id];
      s.sources = {
        ...s.sources,
        [d.source_id]: {
          source_id: d.source_id,
          title: d.title,
          passage: d.passage,
          url: d.url ?? null,
          step_id: d.step_id ?? null,
          cited_by: prev ? prev.cited_by : [],
        },
      };
      if (!prev) {
        s.source_order = [...s.source_order, d.source_id];
        const st = d.step_id ? s.steps.find((x) => x.step_id === d.step_id) : undefined;
        if (st && st.status !== "done") {
          updateStep(s, st.step_id, null, (x) => ({ source_count: x.source_count + 1 }));
        }
      }
      break;
    }
    case "usage.recorded": {
      const d = ev.data;
      if (d.usage_id != null) {
        if (s.usage_ids.includes(d.usage_id)) break;
        s.usage_ids = [...s.usage_ids, d.usage_id];
      }
      s.spent_usd = Math.round((s.spent_usd + Number(d.cost_usd || 0)) * 1e10) / 1e10;
      const u = d.usage || {};
      s.usage = {
        input_tokens: s.usage.input_tokens + Number(u.input_tokens || 0),
        output_tokens: s.usage.output_tokens + Number(u.output_tokens || 0),
        tool_calls: s.usage.tool_calls + Number(u.tool_calls || 0),
      };
      break;
    }
    case "budget.warning":
      s.budget_warning = ev.data;
      break;
    case "rate_limited":
      s.rate_limited = ev.data;
      break;
    case "clarification.requested":
      s.clarification = ev.data;
      s.clarification_seq = ev.seq;
      s.status = "waiting_clarification";
      break;
    case "clarification.answered":
      s.clarification = null;
      s.clarification_seq = null;
      s.answers = [...s.answers, ev.data.answer];
      if (s.status === "waiting_clarification") s.status = s.started_count ? "running" : "created";
      break;
    case "cancel.requested":
      s.cancel_requested = true;
      break;
    case "content.stored": {
      const d = ev.data;
      s.content_hash = d.content_hash;
      s.content = d.content;
      citeSources(s, d.content);
      if (!s.title && d.content.title) s.title = d.content.title;
      break;
    }
    case "deliverable.requested":
      putDeliverable(s, deliverable(s, ev.data));
      break;
    case "deliverable.progress": {
      const d = ev.data;
      const dv = deliverable(s, d);
      if (dv.status !== "ready") {
        putDeliverable(s, {
          ...dv,
          status: "running",
          attempt: Math.max(dv.attempt, Number(d.attempt || 1)),
          will_retry: false,
          retry_at: null,
          error: null,
          message: d.message,
          fraction: d.fraction ?? null,
        });
      }
      break;
    }
    case "deliverable.ready": {
      const d = ev.data;
      const dv = deliverable(s, d);
      putDeliverable(s, {
        ...dv,
        status: "ready",
        attempt: Math.max(dv.attempt, Number(d.attempt || 1)),
        artifacts: d.artifacts,
        will_retry: false,
        retry_at: null,
        error: null,
        fraction: 1,
      });
      break;
    }
    case "deliverable.failed": {
      const d = ev.data;
      const dv = deliverable(s, d);
      if (dv.status === "ready") break;
      putDeliverable(s, {
        ...dv,
        status: "failed",
        attempt: Math.max(dv.attempt, Number(d.attempt)),
        max_attempts: d.max_attempts,
        will_retry: Boolean(d.will_retry),
        retry_at: d.retry_at ?? null,
        error: d.error,
      });
      break;
    }
    case "billing.waiting":
      s.billing_waiting = true;
      break;
    case "billing.resumed":
      s.billing_waiting = false;
      break;
    case "run.completed":
      s.partial = Boolean(ev.data?.partial);
      s.missing = [...(ev.data?.missing || [])];
      break;
    default:
      // tool.called, tool.result, source.failed, the other terminal events and types newer
      // than this console: they appear in the timeline and change nothing else.
      break;
  }
}
