// @ts-check
/** The gateway's HTTP API, authenticated with the API key kept in this browser session. */

const KEY = "runloom.api_key";

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} title
   * @param {string} detail
   */
  constructor(status, title, detail) {
    super(detail || title);
    this.status = status;
    this.title = title;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

/** @param {string | null} key */
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/**
 * Call the API; answers the decoded JSON or throws ApiError with the problem's detail.
 * @param {string} method
 * @param {string} path
 * @param {{body?: any, headers?: Record<string, string>, key?: string}} [opts]
 * @returns {Promise<any>}
 */
export async function api(method, path, opts = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json", ...(opts.headers || {}) };
  const key = opts.key ?? apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch {
    throw new ApiError(0, "Gateway unreachable", "The gateway does not answer. Is it running?");
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const detail = (data && (data.detail || data.title)) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, (data && data.title) || res.statusText, detail);
  }
  return data;
}

/**
 * A list out of a paged answer, whatever its envelope is called.
 * @param {any} page
 * @returns {any[]}
 */
export function items(page) {
  if (Array.isArray(page)) return page;
  for (const k of ["runs", "items", "data", "results", "deliverables", "events"]) {
    if (page && Array.isArray(page[k])) return page[k];
  }
  return [];
}

/**
 * Download an artifact: fetched with the API key (a plain link cannot send it), then saved.
 * @param {{artifact_id: string, file_name: string}} artifact
 */
export async function download(artifact) {
  const res = await fetch(`/v1/artifacts/${encodeURIComponent(artifact.artifact_id)}`, {
    headers: { Authorization: `Bearer ${apiKey()}` },
  });
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      detail = (await res.json()).detail || detail;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, "Download failed", detail);
  }
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = artifact.file_name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
