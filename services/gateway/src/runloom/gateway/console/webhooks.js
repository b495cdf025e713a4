// @ts-check
/**
 * The webhooks page (`#/webhooks`): the tenant's endpoints, and each one's recent deliveries
 * (status, attempts, last answer, next retry). Everything comes from `/v1/webhooks`.
 */

import { api } from "./api.js";
import { h, mount } from "./dom.js";

/** @param {string | null | undefined} iso */
function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/**
 * @param {HTMLElement} main
 * @returns {Promise<void>}
 */
export async function webhooksPage(main) {
  document.title = "Webhooks · Runloom";
  const body = h("tbody");
  const detail = h("section", { class: "card", "data-testid": "deliveries" });
  mount(
    main,
    h(
      "section",
      { class: "card" },
      h("h1", null, "Webhooks"),
      h(
        "p",
        { class: "muted" },
        "Signed run events (Standard Webhooks) POSTed to your endpoints. Register one with POST /v1/webhooks or `runloom webhooks add URL`.",
      ),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "data-testid": "webhooks" },
          h("thead", null, h("tr", null, h("th", null, "Endpoint"), h("th", null, "Status"), h("th", null, "Events"), h("th", null, "Note"))),
          body,
        ),
      ),
    ),
    detail,
  );
  /** @type {any} */
  let page;
  try {
    page = await api("GET", "/v1/webhooks");
  } catch (err) {
    mount(body, h("tr", null, h("td", { colspan: "4", class: "error" }, err instanceof Error ? err.message : String(err))));
    return;
  }
  /** @type {any[]} */
  const hooks = page.webhooks || [];
  if (!hooks.length) {
    mount(body, h("tr", null, h("td", { colspan: "4", class: "muted" }, "No webhooks yet.")));
    return;
  }
  for (const w of hooks) {
    const note = w.disabled_reason || (w.failing_since ? `failing since ${when(w.failing_since)}` : w.run_id ? `run ${w.run_id}` : "");
    body.appendChild(
      h(
        "tr",
        { "data-webhook": w.id },
        h("td", null, h("button", { type: "button", class: "link", onclick: () => deliveries(detail, w) }, w.url)),
        h("td", null, w.status),
        h("td", null, (w.events || []).join(", ")),
        h("td", null, note),
      ),
    );
  }
}

/**
 * @param {HTMLElement} detail
 * @param {any} w
 */
async function deliveries(detail, w) {
  mount(detail, h("h2", null, `Deliveries to ${w.url}`), h("p", { class: "muted" }, "Loading…"));
  /** @type {any} */
  let got;
  try {
    got = await api("GET", `/v1/webhooks/${encodeURIComponent(w.id)}/deliveries?limit=50`);
  } catch (err) {
    mount(detail, h("p", { class: "error" }, err instanceof Error ? err.message : String(err)));
    return;
  }
  /** @type {any[]} */
  const rows = got.deliveries || [];
  mount(
    detail,
    h("h2", null, `Deliveries to ${w.url}`),
    rows.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            null,
            h("thead", null, h("tr", null, ...["Event", "Run · seq", "Status", "Attempts", "HTTP", "Next attempt", "Last error"].map((t) => h("th", null, t)))),
            h(
              "tbody",
              null,
              rows.map((d) =>
                h(
                  "tr",
                  { "data-delivery": d.id },
                  h("td", null, d.event_type),
                  h("td", null, `${d.run_id} · ${d.seq}`),
                  h("td", null, d.status),
                  h("td", { class: "num" }, String(d.attempts)),
                  h("td", { class: "num" }, d.response_status == null ? "" : String(d.response_status)),
                  h("td", null, d.status === "pending" ? when(d.next_attempt_at) : ""),
                  h("td", null, d.last_error || ""),
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No deliveries yet."),
  );
}
