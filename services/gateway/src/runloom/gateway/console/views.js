// @ts-check
/**
 * The run page's components. Each renders one slice of the reducer's state and nothing else;
 * `RunView.render(state)` re-renders only the slices whose reference changed.
 */

import { ApiError, api, download } from "./api.js";
import { clock, h, money, mount, size } from "./dom.js";

/** @typedef {import("./reducer.js").RunState} RunState */
/** @typedef {import("./reducer.js").StepState} StepState */
/** @typedef {import("./reducer.js").TimelineRow} TimelineRow */
/** @typedef {import("./stream.js").ConnState} ConnState */

export const STATUS_LABEL = {
  created: "Queued",
  queued: "Queued",
  running: "Running",
  waiting_clarification: "Waiting for your answer",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
  budget_stopped: "Stopped: budget used up",
};

/** @param {string} reason */
export function queueReason(reason) {
  return reason === "tenant_concurrency" ? "your runs already working fill your share" : "the platform is busy";
}

const STEP_ICON = { pending: "○", running: "◐", done: "✓", failed: "✗", skipped: "–" };

/**
 * @param {string} status
 * @param {boolean} [partial]
 */
export function badge(status, partial = false) {
  const label = STATUS_LABEL[/** @type {keyof typeof STATUS_LABEL} */ (status)] || status;
  return h(
    "span",
    { class: `badge badge-${status}${partial ? " badge-partial" : ""}`, "data-testid": "run-status" },
    partial ? `${label} · partial` : label,
  );
}

/** @param {StepState} st */
function stepItem(st) {
  const pct = st.fraction != null && st.status === "running" ? Math.round(st.fraction * 100) : null;
  return h(
    "li",
    { class: `step step-${st.status}`, "data-step": st.step_id, "data-status": st.status },
    h("span", { class: "step-icon", "aria-hidden": "true" }, STEP_ICON[st.status] || "?"),
    h(
      "div",
      { class: "step-body" },
      h("div", { class: "step-title" }, st.title),
      h(
        "div",
        { class: "step-meta" },
        h("span", { class: "step-status" }, st.status),
        st.kind !== "research" ? ` · ${st.kind}` : null,
        st.agent ? ` · ${st.agent}` : null,
        st.source_count ? ` · ${st.source_count} source${st.source_count === 1 ? "" : "s"}` : null,
        pct !== null ? ` · ${pct}%` : null,
      ),
      st.progress && st.status === "running" ? h("div", { class: "step-progress" }, st.progress) : null,
      st.error ? h("div", { class: "step-error" }, st.error) : null,
    ),
  );
}

/** PlanViewer: the plan's steps with live status; a parallel group shows as one lane. */
export function planViewer(/** @type {StepState[]} */ steps) {
  if (!steps.length) return h("p", { class: "muted" }, "No plan yet.");
  /** @type {(HTMLElement)[]} */
  const out = [];
  for (let i = 0; i < steps.length; ) {
    const g = steps[i].parallel_group;
    let j = i + 1;
    if (g != null) while (j < steps.length && steps[j].parallel_group === g) j++;
    const group = steps.slice(i, j);
    if (g != null && group.length > 1) {
      const active = group.filter((s) => s.status === "running").length;
      out.push(
        h(
          "li",
          { class: "parallel", "data-parallel-group": String(g) },
          h(
            "div",
            { class: "parallel-label" },
            `${group.length} sub-agents in parallel`,
            active ? ` · ${active} running` : "",
          ),
          h("ol", { class: "parallel-steps" }, group.map(stepItem)),
        ),
      );
    } else out.push(...group.map(stepItem));
    i = j;
  }
  return h("ol", { class: "plan", "aria-label": "Plan steps" }, out);
}

/** SourcesPanel: title, passage, and the claims that cite each source. */
export function sourcesPanel(/** @type {RunState} */ state) {
  if (!state.source_order.length) {
    return h("p", { class: "muted" }, state.terminal ? "No sources were found." : "No sources yet.");
  }
  return h(
    "ol",
    { class: "sources" },
    state.source_order.map((id, i) => {
      const src = state.sources[id];
      return h(
        "li",
        { class: "source", id: `source-${id}`, "data-source": id },
        h(
          "div",
          { class: "source-title" },
          h("span", { class: "source-num" }, `[${i + 1}]`),
          " ",
          src.url ? h("a", { href: src.url, target: "_blank", rel: "noopener noreferrer" }, src.title) : src.title,
        ),
        h("blockquote", { class: "source-passage" }, src.passage),
        src.cited_by.length
          ? h(
              "details",
              { class: "source-claims" },
              h("summary", null, `Cited by ${src.cited_by.length} claim${src.cited_by.length === 1 ? "" : "s"}`),
              h(
                "ul",
                null,
                src.cited_by.map((c) => h("li", { "data-claim": c.claim_id }, h("em", null, c.section), ": ", c.text)),
              ),
            )
          : h("div", { class: "muted small" }, state.content ? "Not cited in the report." : "Not cited yet."),
      );
    }),
  );
}

/**
 * One line a person reads for an event.
 * @param {TimelineRow} r
 * @param {Map<string, string>} [titles] step titles by step id
 */
export function describe(r, titles) {
  const text = describeFull(r, titles || new Map());
  return text.length > 160 ? `${text.slice(0, 159)}…` : text;
}

/**
 * @param {TimelineRow} r
 * @param {Map<string, string>} titles
 */
function describeFull(r, titles) {
  const d = r.data || {};
  const step = (/** @type {string} */ id) => titles.get(id) || id;
  switch (r.type) {
    case "run.created":
      return `Run created: “${d.question}”${d.budget_usd != null ? ` (budget ${money(d.budget_usd)})` : ""}`;
    case "run.started":
      return `Started by ${d.worker}${d.attempt > 1 ? ` (takeover, attempt ${d.attempt})` : ""}`;
    case "plan.proposed":
      return `Plan: ${(d.steps || []).length} steps`;
    case "plan.revised":
      return `Plan revised: ${d.reason}`;
    case "step.started":
      return `Step started: ${d.title || step(d.step_id)}${d.agent ? ` (${d.agent})` : ""}`;
    case "step.progress":
      return `${step(d.step_id)}: ${d.message}`;
    case "step.completed":
      return `Step done: ${step(d.step_id)}${d.summary ? ` — ${d.summary}` : ""}`;
    case "step.failed":
      return `Step ${d.reason === "skipped" ? "skipped" : "failed"}: ${step(d.step_id)} — ${d.error}`;
    case "message.delta":
      return `${d.stream} #${d.index}: ${String(d.text).slice(0, 80)}`;
    case "tool.called":
      return `Tool ${d.tool}(${Object.values(d.arguments || {}).map(String).join(", ").slice(0, 60)})`;
    case "tool.result":
      return `Tool ${d.tool} ${d.ok === false ? `failed: ${d.error}` : `→ ${d.result_count ?? ""} ${d.summary || "results"}`}`;
    case "source.found":
      return `Source: ${d.title}`;
    case "source.failed":
      return `Source failed: ${d.reason}`;
    case "usage.recorded":
      return `Usage: ${d.provider || d.tool || d.kind} ${money(Number(d.cost_usd || 0))}`;
    case "budget.warning":
      return `Budget warning: ${Math.round(d.fraction * 100)}% of the ${d.scope} budget`;
    case "billing.waiting":
      return `Billing unavailable: ${d.message}`;
    case "billing.resumed":
      return `Billing back after ${Math.round(d.waited_s)} s`;
    case "run.queued":
      return `Queued: position ${d.position} (${queueReason(d.reason)})`;
    case "rate_limited":
      return `Rate limited by ${d.provider}; retry in ${d.retry_after_s} s`;
    case "clarification.requested":
      return `Question for you: ${d.question}`;
    case "clarification.answered":
      return `Answered: ${d.answer}`;
    case "cancel.requested":
      return "Cancel requested";
    case "content.stored":
      return `Report content stored (${(d.content?.sections || []).length} sections)`;
    case "deliverable.requested":
      return `Deliverable requested: ${d.kind}`;
    case "deliverable.progress":
      return `${d.kind}: ${d.message}`;
    case "deliverable.ready":
      return `${d.kind} ready (${(d.artifacts || []).map((/** @type {any} */ a) => a.format).join(", ")})`;
    case "deliverable.failed":
      return `${d.kind} failed (attempt ${d.attempt}/${d.max_attempts}): ${d.error}`;
    case "run.completed":
      return d.partial ? "Completed (partial)" : "Completed";
    case "run.failed":
      return `Failed: ${d.error}`;
    case "run.cancelled":
      return "Cancelled";
    case "run.budget_stopped":
      return `Budget stop: spent ${money(d.spent_usd)} of ${money(d.budget_usd)}`;
    case "reset":
      return `Part of the history is gone; continuing from a snapshot (${d.reason})`;
    default:
      return r.type;
  }
}

/**
 * @param {TimelineRow} r
 * @param {Map<string, string>} titles
 */
function timelineRow(r, titles) {
  return h(
    "tr",
    { "data-seq": String(r.seq), class: `ev ev-${r.type.replace(/[._]/g, "-")}` },
    h("td", { class: "num" }, String(r.seq)),
    h("td", null, h("time", { datetime: r.time }, clock(r.time))),
    h("td", null, h("code", null, r.type)),
    h("td", { class: "desc" }, describe(r, titles)),
    h("td", { class: "num" }, money(r.spent_usd)),
  );
}

/** Seconds until an RFC 3339 time (never negative). */
function secondsUntil(/** @type {string} */ iso) {
  return Math.max(0, Math.ceil((new Date(iso).getTime() - Date.now()) / 1000));
}

/** A countdown as a person reads it: "now", "42 s", "3 min 5 s", "1 h 2 min". */
export function duration(/** @type {number} */ s) {
  if (s <= 0) return "now";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Update every countdown on the page (called each second). */
/** @param {ParentNode} [root] */
export function tickCountdowns(root = document) {
  for (const el of root.querySelectorAll("[data-countdown-to]")) {
    el.textContent = duration(secondsUntil(/** @type {HTMLElement} */ (el).dataset.countdownTo || ""));
  }
}

/** The run page. */
export class RunView {
  /**
   * @param {HTMLElement} root
   * @param {string} runId
   */
  constructor(root, runId) {
    this.runId = runId;
    /** @type {RunState | null} */
    this.prev = null;
    this.rows = 0;
    /** @type {number | null} */
    this.clarificationSeq = null;
    const sec = (/** @type {string} */ id, /** @type {string} */ title, /** @type {HTMLElement} */ body) =>
      h("section", { class: "panel", id, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), body);
    this.header = h("div", { class: "run-header" });
    this.conn = h("div", { class: "conn", role: "status", "aria-live": "polite", "data-testid": "connection" });
    this.banners = h("div", { class: "banners", "aria-live": "polite" });
    this.plan = h("div");
    this.report = h("div", { class: "report", "data-testid": "report" });
    this.deliverables = h("div");
    this.sources = h("div");
    this.tbody = h("tbody");
    this.timelineCount = h("span", { class: "muted small" });
    root.replaceChildren(
      h(
        "div",
        { class: "run-page" },
        h("div", { class: "run-top" }, this.header, this.conn),
        this.banners,
        h(
          "div",
          { class: "run-grid" },
          h(
            "div",
            { class: "run-main" },
            sec("plan", "Plan", this.plan),
            sec("report-panel", "Report", this.report),
            sec("deliverables", "Deliverables", this.deliverables),
          ),
          h("aside", { class: "run-aside" }, sec("sources", "Sources", this.sources)),
        ),
        h(
          "section",
          { class: "panel", id: "timeline", "aria-labelledby": "timeline-h" },
          h("h2", { id: "timeline-h" }, "Timeline ", this.timelineCount),
          h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "timeline", "data-testid": "timeline" },
              h(
                "thead",
                null,
                h("tr", null, h("th", null, "#"), h("th", null, "Time"), h("th", null, "Event"), h("th", null, "What happened"), h("th", null, "Cost so far")),
              ),
              this.tbody,
            ),
          ),
        ),
      ),
    );
  }

  /** @param {ConnState} c */
  connection(c) {
    this.conn.dataset.state = c.connection;
    this.conn.textContent = c.detail;
  }

  /** @param {RunState} s */
  render(s) {
    const p = this.prev;
    if (!p || p.status !== s.status || p.partial !== s.partial || p.terminal !== s.terminal || p.spent_usd !== s.spent_usd || p.title !== s.title || p.question !== s.question || p.cancel_requested !== s.cancel_requested || p.budget_usd !== s.budget_usd) {
      this.renderHeader(s);
    }
    if (!p || p.steps !== s.steps) mount(this.plan, planViewer(s.steps));
    if (!p || p.sources !== s.sources || p.source_order !== s.source_order || p.terminal !== s.terminal) {
      mount(this.sources, sourcesPanel(s));
    }
    if (!p || p.report_text !== s.report_text || p.content !== s.content || p.status !== s.status) this.renderReport(s);
    if (!p || p.deliverables !== s.deliverables || p.status !== s.status) this.renderDeliverables(s);
    this.renderBanners(s, p);
    if (s.timeline.length < this.rows) {
      this.tbody.replaceChildren();
      this.rows = 0;
    }
    const titles = new Map(s.steps.map((st) => [st.step_id, st.title]));
    for (; this.rows < s.timeline.length; this.rows++) this.tbody.appendChild(timelineRow(s.timeline[this.rows], titles));
    this.timelineCount.textContent = `(${s.timeline.length} events)`;
    this.prev = s;
  }

  /** @param {RunState} s */
  renderHeader(s) {
    const active = !s.terminal;
    mount(
      this.header,
      h("h1", { class: "run-title" }, s.title || s.question || this.runId),
      s.title && s.question && s.title !== s.question ? h("p", { class: "run-question" }, s.question) : null,
      h(
        "div",
        { class: "run-meta" },
        badge(s.status, s.partial),
        h(
          "span",
          { class: "spend", "data-testid": "spend" },
          `Spent ${money(spentShown(s))}`,
          s.budget_usd != null ? ` of ${money(s.budget_usd)}` : "",
        ),
        h("code", { class: "muted small" }, this.runId),
        active
          ? h(
              "button",
              {
                class: "danger",
                type: "button",
                "data-testid": "cancel",
                disabled: s.cancel_requested,
                onclick: async (/** @type {Event} */ e) => {
                  const b = /** @type {HTMLButtonElement} */ (e.currentTarget);
                  b.disabled = true;
                  b.textContent = "Cancelling…";
                  try {
                    await api("POST", `/v1/runs/${encodeURIComponent(this.runId)}/cancel`);
                  } catch (err) {
                    b.disabled = false;
                    b.textContent = "Cancel run";
                    alertError(err);
                  }
                },
              },
              s.cancel_requested ? "Cancelling…" : "Cancel run",
            )
          : null,
      ),
    );
  }

  /** @param {RunState} s */
  renderReport(s) {
    if (!s.report_text && !(s.content && s.content.sections && s.content.sections.length)) {
      mount(this.report, h("p", { class: "muted" }, s.terminal ? "No report was written." : "The report appears here as it is written."));
      return;
    }
    const numbers = new Map(s.source_order.map((id, i) => [id, i + 1]));
    if (s.content && s.content.sections && s.content.sections.length) {
      mount(
        this.report,
        h(
          "article",
          { class: "report-content" },
          s.content.summary ? h("p", { class: "summary" }, s.content.summary) : null,
          s.content.sections.map((sec) =>
            h(
              "section",
              null,
              h("h3", null, sec.title),
              h(
                "p",
                null,
                (sec.claims || []).map((c) => [
                  h(
                    "span",
                    { class: c.flagged ? "claim flagged" : "claim", title: c.flagged ? "Could not be supported by a source" : null },
                    c.text,
                  ),
                  (c.citations || []).map((ci) =>
                    h("a", { class: "cite", href: `#source-${ci.source_id}`, title: ci.passage, onclick: focusSource(ci.source_id) }, `[${numbers.get(ci.source_id) ?? "?"}]`),
                  ),
                  " ",
                ]),
              ),
            ),
          ),
        ),
      );
      return;
    }
    mount(this.report, h("pre", { class: "report-stream" }, s.report_text, s.terminal ? null : h("span", { class: "cursor", "aria-hidden": "true" }, "▍")));
  }

  /** @param {RunState} s */
  renderDeliverables(s) {
    const list = Object.values(s.deliverables);
    if (!list.length) {
      mount(this.deliverables, h("p", { class: "muted" }, s.terminal ? "No deliverables were requested." : "Deliverables are made once the report is written."));
      return;
    }
    mount(
      this.deliverables,
      h(
        "ul",
        { class: "deliverables" },
        list.map((d) =>
          h(
            "li",
            { class: `deliverable deliverable-${d.status}`, "data-kind": d.kind, "data-status": d.status },
            h("div", { class: "deliverable-head" }, h("strong", null, d.kind), " ", h("span", { class: "muted" }, deliverableStatus(d))),
            d.status === "failed"
              ? h(
                  "div",
                  { class: d.will_retry ? "warn small" : "error small", role: d.will_retry ? null : "alert" },
                  d.will_retry
                    ? `Attempt ${d.attempt}${d.max_attempts ? ` of ${d.max_attempts}` : ""} failed: ${d.error}. Retrying${d.retry_at ? " in " : "…"}`
                    : `Failed for good after ${d.attempt} attempt${d.attempt === 1 ? "" : "s"}: ${d.error}`,
                  d.will_retry && d.retry_at ? h("span", { "data-countdown-to": d.retry_at }, "") : null,
                )
              : null,
            d.artifacts.length
              ? h(
                  "div",
                  { class: "artifacts" },
                  d.artifacts.map((a) =>
                    h(
                      "button",
                      {
                        type: "button",
                        class: "artifact",
                        "data-artifact": a.artifact_id,
                        onclick: async () => {
                          try {
                            await download(a);
                          } catch (err) {
                            alertError(err);
                          }
                        },
                      },
                      `⤓ ${a.file_name}`,
                      h("span", { class: "muted small" }, ` ${a.format.toUpperCase()}, ${size(a.size)}`),
                    ),
                  ),
                )
              : null,
          ),
        ),
      ),
    );
  }

  /**
   * The failure states, each in words a person understands.
   * @param {RunState} s
   * @param {RunState | null} p
   */
  renderBanners(s, p) {
    if (p && p.status === s.status && p.queued === s.queued && p.rate_limited === s.rate_limited && p.billing_waiting === s.billing_waiting && p.budget_warning === s.budget_warning && p.clarification_seq === s.clarification_seq && p.cancel_requested === s.cancel_requested && p.terminal === s.terminal) {
      return;
    }
    const keepForm = s.clarification_seq !== null && s.clarification_seq === this.clarificationSeq;
    /** @type {HTMLElement[]} */
    const out = [];
    if (s.clarification && !keepForm) {
      out.push(this.clarificationForm(s));
      this.clarificationSeq = s.clarification_seq;
    } else if (keepForm) {
      const form = this.banners.querySelector("[data-testid=clarification]");
      if (form) out.push(/** @type {HTMLElement} */ (form));
    } else this.clarificationSeq = null;
    if (s.queued && !s.terminal) {
      const q = s.queued;
      out.push(
        h(
          "div",
          { class: "banner info", "data-testid": "queued" },
          h("strong", null, `Queued (position ${q.position}). `),
          `The run waits to start: ${queueReason(q.reason)}`,
          q.limit != null ? ` (${q.running} of ${q.limit} running)` : "",
          ". It starts by itself; cancelling ends it at once.",
        ),
      );
    }
    if (s.rate_limited) {
      const r = s.rate_limited;
      out.push(
        h(
          "div",
          { class: "banner warn", "data-testid": "rate-limited" },
          h("strong", null, "Rate limited. "),
          `${r.provider} asked us to slow down; the run retries automatically in `,
          h("span", { "data-countdown-to": r.retry_at }, `${Math.ceil(r.retry_after_s)} s`),
          (r.attempt ?? 1) > 1 ? ` (attempt ${r.attempt})` : "",
          ".",
        ),
      );
    }
    if (s.billing_waiting) {
      out.push(h("div", { class: "banner warn", "data-testid": "billing-waiting" }, h("strong", null, "Waiting for billing. "), "Spending is paused until the billing service answers again; the run continues by itself, nothing is lost."));
    }
    if (s.budget_warning && !s.terminal) {
      const b = s.budget_warning;
      out.push(h("div", { class: "banner info" }, `Budget: ${money(b.spent_usd)} of ${money(b.budget_usd)} (${Math.round(b.fraction * 100)}% of the ${b.scope} budget) spent.`));
    }
    if (s.cancel_requested && !s.terminal) {
      out.push(h("div", { class: "banner info", "data-testid": "cancelling" }, "Cancel requested — the run is stopping…"));
    }
    const t = s.terminal;
    if (t) {
      const d = t.data || {};
      if (t.type === "run.completed" && s.partial) {
        out.push(
          h(
            "div",
            { class: "banner warn", "data-testid": "partial" },
            h("strong", null, "Completed with partial data. "),
            "What is missing:",
            h("ul", null, (s.missing.length ? s.missing : ["(no reason given)"]).map((m) => h("li", null, m))),
          ),
        );
      } else if (t.type === "run.completed") {
        out.push(h("div", { class: "banner ok", "data-testid": "completed" }, h("strong", null, "Completed. "), `Spent ${money(spentShown(s))}.`));
      } else if (t.type === "run.budget_stopped") {
        out.push(
          h(
            "div",
            { class: "banner error", role: "alert", "data-testid": "budget-stopped" },
            h("strong", null, "Stopped: the budget is used up. "),
            `Spent ${money(d.spent_usd)} of the ${d.scope} budget of ${money(d.budget_usd)}; nothing more was spent. `,
            h("div", null, "Kept:"),
            h("ul", { "data-testid": "kept" }, (d.kept && d.kept.length ? d.kept : ["nothing had been produced yet"]).map((/** @type {string} */ k) => h("li", null, k))),
          ),
        );
      } else if (t.type === "run.cancelled") {
        out.push(h("div", { class: "banner info", "data-testid": "cancelled" }, h("strong", null, "Cancelled. "), d.reason ? `Reason: ${d.reason}. ` : "", "What was produced before the cancel stays below."));
      } else if (t.type === "run.failed") {
        out.push(
          h(
            "div",
            { class: "banner error", role: "alert", "data-testid": "failed" },
            h("strong", null, d.reason === "clarification_timeout" ? "Stopped: the question was not answered in time. " : "The run failed. "),
            d.error,
          ),
        );
      }
    }
    mount(this.banners, out);
    tickCountdowns(this.banners);
  }

  /** @param {RunState} s */
  clarificationForm(s) {
    const c = /** @type {NonNullable<RunState["clarification"]>} */ (s.clarification);
    const input = /** @type {HTMLTextAreaElement} */ (h("textarea", { id: "clarification-answer", name: "answer", rows: "2", required: true }));
    const err = h("div", { class: "error small", role: "alert" });
    const button = /** @type {HTMLButtonElement} */ (h("button", { type: "submit" }, "Send answer"));
    const form = h(
      "form",
      {
        class: "banner question",
        "data-testid": "clarification",
        onsubmit: async (/** @type {Event} */ e) => {
          e.preventDefault();
          const answer = input.value.trim();
          if (!answer) {
            err.textContent = "Write an answer first.";
            input.focus();
            return;
          }
          button.disabled = true;
          button.textContent = "Sending…";
          try {
            await api("POST", `/v1/runs/${encodeURIComponent(this.runId)}/clarification`, { body: { answer } });
            err.textContent = "";
            button.textContent = "Sent — the run continues";
          } catch (ex) {
            err.textContent = ex instanceof Error ? ex.message : String(ex);
            button.disabled = false;
            button.textContent = "Send answer";
          }
        },
      },
      h("strong", null, "The run is paused: it needs your answer."),
      h("label", { for: "clarification-answer" }, c.question),
      c.reason && !c.question.includes(c.reason) ? h("div", { class: "muted small" }, c.reason) : null,
      c.deadline ? h("div", { class: "muted small" }, "Answer within ", h("span", { "data-countdown-to": c.deadline }, ""), ", or the run ends.") : null,
      input,
      h("div", { class: "row" }, button),
      err,
    );
    queueMicrotask(() => input.focus());
    return form;
  }
}

/**
 * What the run spent: the metered usage, or billing's own figure at the end when larger
 * (a stop may count reserved spend that no usage event reports).
 * @param {RunState} s
 */
function spentShown(s) {
  const final = s.terminal && typeof s.terminal.data.spent_usd === "number" ? s.terminal.data.spent_usd : 0;
  return Math.max(s.spent_usd, final);
}

/** @param {import("./reducer.js").DeliverableState} d */
function deliverableStatus(d) {
  switch (d.status) {
    case "requested":
      return "queued";
    case "running":
      return `${d.message || "rendering"}${d.attempt > 1 ? ` (attempt ${d.attempt})` : ""}${d.fraction != null ? ` · ${Math.round(d.fraction * 100)}%` : ""}`;
    case "ready":
      return "ready";
    case "failed":
      return d.will_retry ? "retrying" : "failed";
    default:
      return d.status;
  }
}

/** @param {string} id */
function focusSource(id) {
  return (/** @type {Event} */ e) => {
    e.preventDefault();
    const el = document.getElementById(`source-${id}`);
    if (!el) return;
    el.scrollIntoView({ behavior: "smooth", block: "center" });
    el.classList.add("flash");
    setTimeout(() => el.classList.remove("flash"), 1200);
  };
}

/** @param {unknown} err */
export function alertError(err) {
  const msg = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  const toast = h("div", { class: "toast", role: "alert" }, msg);
  document.body.appendChild(toast);
  setTimeout(() => toast.remove(), 6000);
}
