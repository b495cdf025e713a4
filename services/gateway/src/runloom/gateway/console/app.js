// @ts-check
/**
 * The console's entry: sign in, the run list, the new-run form and the run page.
 * Hash routes (`#/runs`, `#/new`, `#/runs/<id>`, `#/webhooks`) so the gateway serves one page at `/`.
 */

import { ApiError, api, apiKey, items, setApiKey } from "./api.js";
import { h, money, mount } from "./dom.js";
import { RunStream } from "./stream.js";
import { RunView, alertError, badge, tickCountdowns } from "./views.js";
import { webhooksPage } from "./webhooks.js";

const main = /** @type {HTMLElement} */ (document.getElementById("main"));
const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));

/** @type {RunStream | null} */
let stream = null;
/** @type {ReturnType<typeof setTimeout> | null} */
let listRefresh = null;
const ENDED = new Set(["completed", "failed", "cancelled", "budget_stopped"]);

const DELIVERABLES = [
  ["report", "Report (Markdown, HTML, PDF, DOCX)"],
  ["website", "Website (static, zipped)"],
  ["slides", "Slides (PPTX, HTML)"],
];

function route() {
  stream?.close();
  stream = null;
  if (listRefresh) clearTimeout(listRefresh);
  listRefresh = null;
  const hash = location.hash.replace(/^#/, "") || "/runs";
  renderNav();
  if (!apiKey()) return signIn();
  const m = hash.match(/^\/runs\/([^/]+)$/);
  if (m) return runPage(decodeURIComponent(m[1]));
  if (hash === "/new") return newRun();
  if (hash === "/webhooks") return webhooksPage(main);
  return runList();
}

function renderNav() {
  mount(
    nav,
    apiKey()
      ? [
          h("a", { href: "#/runs" }, "Runs"),
          h("a", { href: "#/webhooks" }, "Webhooks"),
          h("a", { href: "#/new", class: "primary-link" }, "New run"),
          h(
            "button",
            {
              type: "button",
              class: "link",
              onclick: () => {
                setApiKey(null);
                location.hash = "#/signin";
                route();
              },
            },
            "Sign out",
          ),
        ]
      : [],
  );
}

/** @param {string} title */
function page(title) {
  document.title = `${title} · Runloom`;
  main.focus({ preventScroll: true });
}

function signIn() {
  page("Sign in");
  const input = /** @type {HTMLInputElement} */ (
    h("input", { id: "api-key", name: "api_key", type: "password", autocomplete: "off", required: true, spellcheck: "false" })
  );
  const err = h("div", { class: "error", role: "alert" });
  mount(
    main,
    h(
      "form",
      {
        class: "card narrow",
        onsubmit: async (/** @type {Event} */ e) => {
          e.preventDefault();
          const key = input.value.trim();
          try {
            await api("GET", "/v1/runs?limit=1", { key });
          } catch (ex) {
            err.textContent =
              ex instanceof ApiError && ex.status === 401
                ? "This key is not valid. Locally it is in .runloom/api-key (printed by `runloom up`)."
                : ex instanceof Error
                  ? ex.message
                  : String(ex);
            input.focus();
            return;
          }
          setApiKey(key);
          location.hash = "#/runs";
          route();
        },
      },
      h("h1", null, "Sign in"),
      h("p", { class: "muted" }, "Your API key stays in this browser tab only (session storage)."),
      h("label", { for: "api-key" }, "API key"),
      input,
      h("div", { class: "row" }, h("button", { type: "submit" }, "Sign in")),
      err,
    ),
  );
  input.focus();
}

/** @param {boolean} [quiet] a refresh keeps the focus where it is */
/**
 * A run paused without an event saying so (the event store is full): why, and when it is tried
 * again, from the run's `stalled` field; nothing once the run goes on.
 * @param {{ reason: string, detail: string, retry_at: string } | null | undefined} stalled
 */
function stalledNote(stalled) {
  if (!stalled) return null;
  const why = stalled.reason === "event_store_full" ? "event store full" : stalled.reason;
  const at = stalled.retry_at ? `, next try ${new Date(stalled.retry_at).toLocaleTimeString()}` : "";
  return h("div", { class: "muted", title: stalled.detail, "data-testid": "run-stalled" }, `paused: ${why}${at}`);
}

async function runList(quiet = false) {
  if (!quiet) page("Runs");
  const list = h("tbody");
  const more = h("div", { class: "row" });
  mount(
    main,
    h(
      "section",
      { class: "card" },
      h("div", { class: "row spread" }, h("h1", null, "Runs"), h("a", { href: "#/new", class: "button" }, "New run")),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "runs", "data-testid": "runs" },
          h("thead", null, h("tr", null, h("th", null, "Question"), h("th", null, "Status"), h("th", null, "Spent"), h("th", null, "Created"))),
          list,
        ),
      ),
      more,
    ),
  );
  /** @param {string | null} cursor */
  const load = async (cursor) => {
    const q = new URLSearchParams({ limit: "25" });
    if (cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await api("GET", `/v1/runs?${q}`);
    } catch (err) {
      mount(more, h("p", { class: "error" }, err instanceof Error ? err.message : String(err)));
      return;
    }
    const runs = items(page);
    if (!runs.length && !cursor) {
      list.appendChild(h("tr", null, h("td", { colspan: "4", class: "muted" }, "No runs yet. ", h("a", { href: "#/new" }, "Start one."))));
    }
    for (const r of runs) {
      list.appendChild(
        h(
          "tr",
          { "data-run": r.id },
          h("td", null, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, r.title || r.question || r.id)),
          h("td", null, badge(r.status || "created", Boolean(r.partial)), stalledNote(r.stalled)),
          h("td", { class: "num" }, r.spent_usd != null ? money(Number(r.spent_usd)) : ""),
          h("td", null, r.created_at ? new Date(r.created_at).toLocaleString() : ""),
        ),
      );
    }
    const next = page && (page.next_cursor || page.cursor);
    mount(more, next ? h("button", { type: "button", class: "secondary", onclick: () => load(next) }, "Load more") : null);
    // While a run on the first page is still going, refresh the list (statuses, spend).
    if (!cursor && runs.some((/** @type {any} */ r) => !ENDED.has(r.status))) {
      listRefresh = setTimeout(() => {
        if (location.hash.replace(/^#/, "") === "/runs" || location.hash === "") runList(true);
      }, 3000);
    }
  };
  await load(null);
}

function newRun() {
  page("New run");
  const idempotencyKey = randomKey(); // a double submit answers the same run
  const question = /** @type {HTMLTextAreaElement} */ (
    h("textarea", { id: "question", name: "question", rows: "3", required: true, placeholder: "e.g. How do Python generators and coroutines differ?" })
  );
  const budget = /** @type {HTMLInputElement} */ (h("input", { id: "budget", name: "budget", type: "number", min: "0", step: "any", placeholder: "no limit" }));
  const checks = DELIVERABLES.map(([kind, label]) => {
    const box = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", name: "deliverables", value: kind, id: `dl-${kind}`, checked: true }));
    return { box, el: h("label", { class: "check", for: `dl-${kind}` }, box, ` ${label}`) };
  });
  const err = h("div", { class: "error", role: "alert" });
  const submit = /** @type {HTMLButtonElement} */ (h("button", { type: "submit" }, "Start run"));
  mount(
    main,
    h(
      "form",
      {
        class: "card narrow",
        "data-testid": "new-run",
        onsubmit: async (/** @type {Event} */ e) => {
          e.preventDefault();
          const q = question.value.trim();
          if (!q) {
            err.textContent = "Write a question first.";
            question.focus();
            return;
          }
          /** @type {Record<string, any>} */
          const body = { question: q, options: { deliverables: checks.filter((c) => c.box.checked).map((c) => c.box.value) } };
          if (budget.value !== "") {
            const usd = Number(budget.value);
            if (!(usd > 0)) {
              err.textContent = "The budget must be a positive amount in USD, or empty for no limit.";
              budget.focus();
              return;
            }
            body.budget_usd = usd;
          }
          submit.disabled = true;
          submit.textContent = "Starting…";
          try {
            const run = await api("POST", "/v1/runs", { body, headers: { "Idempotency-Key": idempotencyKey } });
            location.hash = `#/runs/${encodeURIComponent(run.id)}`;
          } catch (ex) {
            err.textContent = ex instanceof Error ? ex.message : String(ex);
            submit.disabled = false;
            submit.textContent = "Start run";
          }
        },
      },
      h("h1", null, "New run"),
      h("label", { for: "question" }, "Question"),
      question,
      h("label", { for: "budget" }, "Budget (USD)"),
      budget,
      h("fieldset", null, h("legend", null, "Deliverables"), checks.map((c) => c.el)),
      h("div", { class: "row" }, submit),
      err,
    ),
  );
  question.focus();
}

/** A random key; `crypto.randomUUID` exists only in secure contexts (https, localhost). */
function randomKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {string} runId */
function runPage(runId) {
  page("Run");
  const view = new RunView(main, runId);
  stream = new RunStream(
    runId,
    (state) => {
      view.render(state);
      if (state.title || state.question) document.title = `${state.title || state.question} · Runloom`;
    },
    (conn) => view.connection(conn),
  );
  view.render(stream.state);
  stream.start();
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (e) => alertError(e.reason));
setInterval(() => tickCountdowns(), 1000);
route();
