// @ts-check
/** Realistic run histories for the reducer tests, shaped exactly like stored events. */

/**
 * @param {string} runId
 * @returns {(type: string, data: Record<string, any>) => any}
 */
export function writer(runId) {
  let seq = 0;
  return (type, data) => {
    seq += 1;
    return {
      id: `evt_${String(seq).padStart(6, "0")}`,
      run_id: runId,
      tenant_id: "t1",
      seq,
      type,
      time: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)).toISOString(),
      producer: seq % 3 ? "orchestrator/1" : "gateway/1",
      data,
    };
  };
}

/** A completed run: clarification, a plan with two parallel sub-agents, sources, a rate
 * limit, a streamed report, usage, content stored, one deliverable failing once. */
export function completedRun() {
  const e = writer("run_0000000000000000000000000A");
  return [
    e("run.created", { question: "How do Python generators work?", budget_usd: 1, options: { deliverables: ["report", "slides"] } }),
    e("run.started", { worker: "orchestrator-1" }),
    e("clarification.requested", { question: "Which Python version?", timeout_s: 600 }),
    e("clarification.answered", { answer: "3.12" }),
    e("plan.proposed", {
      steps: [
        { step_id: "s1", title: "What is a generator", parallel_group: 1 },
        { step_id: "s2", title: "yield from and send", parallel_group: 1 },
        { step_id: "w", title: "Write the report", kind: "write" },
      ],
    }),
    e("step.started", { step_id: "s1", agent: "agent-1" }),
    e("step.started", { step_id: "s2", agent: "agent-2" }),
    e("tool.called", { call_id: "c1", tool: "corpus.search", arguments: { q: "generator" }, step_id: "s1" }),
    e("rate_limited", { provider: "openai", retry_at: "2026-01-01T00:01:00Z", retry_after_s: 3, step_id: "s2" }),
    e("tool.result", { call_id: "c1", tool: "corpus.search", result_count: 2, step_id: "s1" }),
    e("source.found", { source_id: "src1", title: "Generators", passage: "A generator yields values.", step_id: "s1" }),
    e("usage.recorded", { usage_id: "u1", kind: "tool", tool: "corpus.search", cost_usd: 0.001, usage: { tool_calls: 1 } }),
    e("source.found", { source_id: "src2", title: "yield expressions", passage: "send() resumes a generator.", step_id: "s2" }),
    e("step.progress", { step_id: "s2", message: "reading 2 passages", fraction: 0.5 }),
    e("step.completed", { step_id: "s1", source_count: 1 }),
    e("step.completed", { step_id: "s2" }),
    e("step.started", { step_id: "w" }),
    e("message.delta", { stream: "report", index: 0, text: "# Generators\n" }),
    e("message.delta", { stream: "report", index: 1, text: "A generator yields values [1]. " }),
    e("message.delta", { stream: "thinking", index: 0, text: "ignored" }),
    e("usage.recorded", { usage_id: "u2", kind: "provider", provider: "offline", model: "extractive", cost_usd: 0.0025, usage: { input_tokens: 120, output_tokens: 40 } }),
    e("usage.recorded", { usage_id: "u2", kind: "provider", provider: "offline", model: "extractive", cost_usd: 0.0025, usage: { input_tokens: 120, output_tokens: 40 } }),
    e("message.delta", { stream: "report", index: 2, text: "send() resumes it [2]." }),
    e("step.completed", { step_id: "w" }),
    e("content.stored", {
      content_hash: "h1",
      content: {
        run_id: "run_0000000000000000000000000A",
        title: "Python generators",
        question: "How do Python generators work?",
        sections: [
          {
            section_id: "sec1",
            title: "Generators",
            claims: [
              { claim_id: "c1", text: "A generator yields values.", citations: [{ source_id: "src1", passage: "A generator yields values." }] },
              { claim_id: "c2", text: "send() resumes it.", citations: [{ source_id: "src2", passage: "send() resumes a generator." }] },
            ],
          },
        ],
        sources: [
          { source_id: "src1", title: "Generators", text: "A generator yields values." },
          { source_id: "src2", title: "yield expressions", text: "send() resumes a generator." },
        ],
      },
    }),
    e("deliverable.requested", { kind: "report", job_id: "j1", content_hash: "h1" }),
    e("deliverable.requested", { kind: "slides", job_id: "j2", content_hash: "h1" }),
    e("deliverable.progress", { kind: "report", job_id: "j1", message: "rendering pdf", fraction: 0.5 }),
    e("deliverable.failed", { kind: "slides", job_id: "j2", error: "renderer crashed", attempt: 1, max_attempts: 3, will_retry: true }),
    e("deliverable.ready", {
      kind: "report",
      job_id: "j1",
      artifacts: [{ artifact_id: "art1", format: "md", media_type: "text/markdown", file_name: "report.md", size: 120, sha256: "x" }],
    }),
    e("deliverable.progress", { kind: "slides", job_id: "j2", message: "retrying", attempt: 2 }),
    e("deliverable.failed", { kind: "slides", job_id: "j2", error: "renderer crashed again", attempt: 3, max_attempts: 3, will_retry: false }),
    e("run.completed", { partial: true, missing: ["slides: renderer crashed again"], spent_usd: 0.0035 }),
  ];
}

/** A run stopped by its budget after one research step. */
export function budgetStoppedRun() {
  const e = writer("run_0000000000000000000000000B");
  return [
    e("run.created", { question: "Explain asyncio", budget_usd: 0.001 }),
    e("run.started", { worker: "orchestrator-1" }),
    e("plan.proposed", { steps: [{ step_id: "a", title: "Event loop" }, { step_id: "b", title: "Tasks" }] }),
    e("step.started", { step_id: "a" }),
    e("usage.recorded", { usage_id: "u1", kind: "provider", cost_usd: 0.0008 }),
    e("budget.warning", { scope: "run", spent_usd: 0.0008, budget_usd: 0.001, fraction: 0.8 }),
    e("step.completed", { step_id: "a" }),
    e("run.budget_stopped", { scope: "run", spent_usd: 0.0008, budget_usd: 0.001, kept: ["research of step 'Event loop'"] }),
  ];
}

/** A run waiting to start: queued behind its tenant's running runs, then moved forward. */
export function queuedRun() {
  const e = writer("run_0000000000000000000000000C");
  return [
    e("run.created", { question: "What is a token bucket?" }),
    e("run.queued", { position: 7, reason: "tenant_concurrency", running: 2, limit: 2 }),
    e("run.queued", { position: 3, reason: "platform_busy", running: 1, limit: 2 }),
  ];
}

/** A queued run that started after a while, and one cancelled while it waited. */
export function queuedThenStartedRun() {
  const e = writer("run_0000000000000000000000000D");
  return [
    e("run.created", { question: "How does weighted round-robin work?" }),
    e("run.queued", { position: 1, reason: "platform_busy" }),
    e("run.started", { worker: "orchestrator-2" }),
    e("plan.proposed", { steps: [{ step_id: "a", title: "Weights" }] }),
  ];
}

export function cancelledWhileQueuedRun() {
  const e = writer("run_0000000000000000000000000E");
  return [
    e("run.created", { question: "Cancel me" }),
    e("run.queued", { position: 4, reason: "tenant_concurrency", running: 8, limit: 8 }),
    e("cancel.requested", { requested_by: "api" }),
    e("run.cancelled", { reason: "cancelled on request while queued" }),
  ];
}
