// The public HTTP API, as the dashboard uses it: JSON in and out, the server's {"detail": ...} as the error
// message, and the bearer token. With auth on, a 401 carrying `WWW-Authenticate: Bearer` makes the page ask
// for a token once; it is kept in sessionStorage (this tab only) and sent as `Authorization: Bearer`, never
// in a URL.

const TOKEN_KEY = "labrun.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let asking = null; // one dialog for every request that got a 401 meanwhile

function askToken(reason) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-reason").textContent = reason;
  input.value = "";
  asking = new Promise((resolve) => {
    const done = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      form.removeEventListener("submit", done);
      sessionStorage.setItem(TOKEN_KEY, value);
      dialog.close();
      asking = null;
      document.dispatchEvent(new CustomEvent("labrun:token"));
      resolve(value);
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("cancel", (event) => event.preventDefault()); // Escape: the page cannot work without it
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return asking;
}

/** The server's detail as one readable text: a string, or FastAPI's list of {loc, msg}. */
export function detailText(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => (d && d.msg ? `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}` : JSON.stringify(d)))
      .join("\n");
  }
  return JSON.stringify(detail);
}

/**
 * fetch() against the API. Resolves to the Response for 2xx and 304; throws ApiError(status, detail) for
 * the rest (and status 0 when the server cannot be reached).
 */
export async function request(method, path, { json, headers = {}, etag } = {}) {
  for (let attempt = 0; ; attempt++) {
    const sent = { Accept: "application/json", ...headers };
    const current = token();
    if (current) sent.Authorization = `Bearer ${current}`;
    if (json !== undefined) sent["Content-Type"] = "application/json";
    if (etag) sent["If-None-Match"] = etag;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: sent,
        body: json === undefined ? undefined : JSON.stringify(json),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch (err) {
      throw new ApiError(0, `the labrun server does not answer (${err.message})`);
    }
    if (response.ok || response.status === 304) return response;
    const detail = await errorDetail(response);
    const bearer = /bearer/i.test(response.headers.get("WWW-Authenticate") || "");
    if (response.status === 401 && bearer && attempt < 3) {
      if (current) forgetToken();
      await askToken(current ? `The token was refused: ${detail}` : "This labrun server needs a token.");
      continue;
    }
    throw new ApiError(response.status, detail);
  }
}

async function errorDetail(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return detailText(body.detail ?? body) || `${response.status} ${response.statusText}`;
  } catch {
    return text.trim() || `${response.status} ${response.statusText}`;
  }
}

export async function getJSON(path) {
  return (await request("GET", path)).json();
}

export async function sendJSON(method, path, json, headers) {
  const response = await request(method, path, { json, headers });
  return response.status === 204 ? null : response.json();
}

/** A key for one user action: a retry (after a token prompt, a dropped connection) is not a second run. */
export function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
