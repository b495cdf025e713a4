// @ts-check
/**
 * A run's events, from history then live, through the one reducer.
 *
 * 1. Catch up: page `GET /v1/runs/{id}/events?format=json&after=<cursor>` until the history
 *    is exhausted (the same pages rebuild the page after a reload).
 * 2. Live: an EventSource on the SSE stream, authenticated by a short-lived stream token
 *    (`?token=`; EventSource cannot send headers) and resumed with `?last_event_id=<cursor>`.
 * 3. On a dropped connection: "reconnecting…", back off, catch up from the cursor, go live.
 *    The cursor only moves past events the reducer has applied, and the reducer ignores
 *    `seq <= last_seq`, so nothing is shown twice; a gap (a seq beyond `last_seq + 1`) is
 *    never applied and triggers a re-fetch, so nothing is missing.
 */

import { ApiError, api } from "./api.js";
import { fromSnapshot, initialState, reduce } from "./reducer.js";

/** @typedef {import("./reducer.js").RunState} RunState */
/** @typedef {import("./types.js").RunEvent} RunEvent */
/**
 * @typedef {"connecting"|"catching_up"|"live"|"reconnecting"|"caught_up"|"ended"|"error"} Connection
 * @typedef {{connection: Connection, detail: string, reconnects: number}} ConnState
 */

/** Every event type of the contracts (EventSource dispatches by name; a test checks drift). */
export const EVENT_TYPES = [
  "run.created",
  "run.queued",
  "run.started",
  "plan.proposed",
  "plan.revised",
  "step.started",
  "step.progress",
  "step.completed",
  "step.failed",
  "message.delta",
  "tool.called",
  "tool.result",
  "source.found",
  "source.failed",
  "usage.recorded",
  "budget.warning",
  "billing.waiting",
  "billing.resumed",
  "rate_limited",
  "clarification.requested",
  "clarification.answered",
  "cancel.requested",
  "content.stored",
  "deliverable.requested",
  "deliverable.progress",
  "deliverable.ready",
  "deliverable.failed",
  "run.completed",
  "run.failed",
  "run.cancelled",
  "run.budget_stopped",
];

const PAGE = 500;

export class RunStream {
  /**
   * @param {string} runId
   * @param {(state: RunState) => void} onState
   * @param {(conn: ConnState) => void} onConnection
   */
  constructor(runId, onState, onConnection) {
    this.runId = runId;
    this.onState = onState;
    this.onConnection = onConnection;
    /** @type {RunState} */
    this.state = initialState();
    /** @type {string | null} cursor after the last applied event */
    this.cursor = null;
    /** @type {EventSource | null} */
    this.es = null;
    this.closed = false;
    this.reconnects = 0;
    this.attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
  }

  get base() {
    return `/v1/runs/${encodeURIComponent(this.runId)}/events`;
  }

  start() {
    this.status("connecting", "Loading the run's history…");
    this.connect();
  }

  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.es?.close();
    this.es = null;
  }

  /**
   * @param {Connection} connection
   * @param {string} detail
   */
  status(connection, detail) {
    this.onConnection({ connection, detail, reconnects: this.reconnects });
  }

  async connect() {
    if (this.closed) return;
    const wasReconnecting = this.attempt > 0;
    try {
      const before = this.state.last_seq;
      await this.catchUp();
      if (this.closed) return;
      if (wasReconnecting) {
        const n = this.state.last_seq - before;
        this.status("caught_up", `Reconnected — caught up (${n} new event${n === 1 ? "" : "s"})`);
      }
      this.attempt = 0;
      if (this.state.terminal) {
        this.status("ended", "The run has ended; this is its full history.");
        return;
      }
      await this.live(wasReconnecting);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 404)) {
        this.status("error", err.message);
        return;
      }
      this.retry();
    }
  }

  retry() {
    if (this.closed) return;
    this.es?.close();
    this.es = null;
    this.attempt += 1;
    if (this.attempt === 1) this.reconnects += 1;
    const delay = Math.min(250 * 2 ** (this.attempt - 1), 2000);
    this.status("reconnecting", `Connection lost — reconnecting… (attempt ${this.attempt})`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Page the stored history after the cursor until it is exhausted. */
  async catchUp() {
    if (!this.cursor && this.state.last_seq === 0) this.status("catching_up", "Loading history…");
    for (;;) {
      const q = new URLSearchParams({ format: "json", limit: String(PAGE) });
      if (this.cursor) q.set("after", this.cursor);
      const page = await api("GET", `${this.base}?${q}`);
      /** @type {{cursor: string, event: any}[]} */
      const items = page.events || [];
      for (const item of items) {
        if (item.event && item.event.type === "reset") this.reset(item.event);
        else this.apply(item.event);
        if (this.state.gap) throw new Error(`history skipped after seq ${this.state.gap.after_seq}`);
        this.cursor = item.cursor;
      }
      if (page.done || items.length < PAGE) return;
    }
  }

  /**
   * The gateway could not replay part of the history: take its snapshot and carry on.
   * @param {any} body
   */
  reset(body) {
    this.state = fromSnapshot(body.snapshot || {}, body.reason || "");
    this.onState(this.state);
  }

  /**
   * Open the live stream from the cursor.
   * @param {boolean} resumed
   */
  async live(resumed) {
    const tok = await api("POST", `/v1/runs/${encodeURIComponent(this.runId)}/stream-token`);
    if (this.closed) return;
    const q = new URLSearchParams({ token: tok.token });
    if (this.cursor) q.set("last_event_id", this.cursor);
    const es = new EventSource(`${this.base}?${q}`);
    this.es = es;
    const onEvent = (/** @type {MessageEvent} */ msg) => {
      if (this.es !== es) return;
      /** @type {RunEvent} */
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch {
        return; // not an event (a comment or a malformed line): nothing to apply
      }
      if (typeof ev.seq !== "number") return;
      this.apply(ev);
      if (this.state.gap) {
        // Never show a hole: drop this connection, re-fetch after the cursor, go live again.
        es.close();
        this.es = null;
        this.attempt = 0;
        this.connect();
        return;
      }
      if (msg.lastEventId && ev.seq === this.state.last_seq) this.cursor = msg.lastEventId;
      if (this.state.terminal) {
        es.close();
        this.es = null;
        this.status("ended", "The run has ended.");
      }
    };
    for (const type of [...EVENT_TYPES, "message"]) es.addEventListener(type, onEvent);
    es.addEventListener("reset", (/** @type {MessageEvent} */ msg) => {
      if (this.es !== es) return;
      try {
        this.reset(JSON.parse(msg.data));
        if (msg.lastEventId) this.cursor = msg.lastEventId;
      } catch {
        /* a malformed reset: the next event shows the gap and triggers a re-fetch */
      }
    });
    es.onopen = () => {
      if (this.es === es && !resumed) this.status("live", "Live");
      if (this.es === es && resumed) setTimeout(() => this.es === es && this.status("live", "Live"), 2500);
    };
    es.onerror = () => {
      if (this.es !== es) return;
      if (this.state.terminal) {
        es.close();
        this.es = null;
        return;
      }
      this.retry();
    };
  }

  /** @param {RunEvent} ev */
  apply(ev) {
    const next = reduce(this.state, ev);
    if (next !== this.state) {
      this.state = next;
      this.onState(next);
    }
  }
}
