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
