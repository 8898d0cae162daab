// The only place that talks to the server: relative URLs, one error shape.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) { onUnauthorized = handler; }

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const options = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, "network", "the dashboard server cannot be reached");
  }
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, error.code || "error", error.message || `HTTP ${response.status}`);
  }
  return data;
}

// A fresh Idempotency-Key: a retried create with the same key cannot create twice.
export function newRequestKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID exists only in secure contexts (https or loopback); getRandomValues everywhere.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export const projectPath = (projectId, rest = "") => `/api/projects/${encodeURIComponent(projectId)}${rest}`;

// ----- chat and plans: a POST answered with Server-Sent Events, and file uploads -----

// The error of a non-2xx answer, in the one shape (a 401 asks for the token as api() does).
async function failure(response) {
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  const error = (data && data.error) || {};
  if (response.status === 401) onUnauthorized();
  return new ApiError(response.status, error.code || "error", error.message || `HTTP ${response.status}`);
}

// POSTs JSON and calls onEvent(name, data) for each event of the text/event-stream answer, as it
// arrives (EventSource cannot POST). `signal` aborts it; resolves when the stream ends.
export async function postEventStream(path, body, { signal, onEvent }) {
  let response;
  try {
    response = await fetch(path, { method: "POST", credentials: "same-origin", signal,
                                   headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
                                   body: JSON.stringify(body) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the dashboard server cannot be reached");
  }
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "";
  let data = [];
  const line = (text) => {
    if (text === "") {  // the blank line ends an event
      if (data.length) onEvent(event || "message", JSON.parse(data.join("\n")));
      event = "";
      data = [];
    } else if (text.startsWith(":")) {
      // a comment: a keep-alive
    } else {
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
  };
  // Lines end with CRLF, LF or CR; a CR at the end of what came may be half of a CRLF: it waits.
  const END = /\r\n|\n|\r(?!$)/;
  const lines = (last) => {
    for (let match = END.exec(buffer); match; match = END.exec(buffer)) {
      line(buffer.slice(0, match.index));
      buffer = buffer.slice(match.index + match[0].length);
    }
    // At the end a last CR ends its line; an event the stream did not finish is dropped (WHATWG).
    if (last && buffer.endsWith("\r")) line(buffer.slice(0, -1));
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    lines(false);
  }
  buffer += decoder.decode();
  lines(true);
}

// POSTs files as multipart/form-data (field `files`, one or more); the JSON answer.
export async function postFiles(path, files) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  let response;
  try {
    response = await fetch(path, { method: "POST", credentials: "same-origin", body: form });
  } catch (err) {
    throw new ApiError(0, "network", "the dashboard server cannot be reached");
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}
