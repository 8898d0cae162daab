// The board's data, live by change: task summaries loaded once from GET /api/board, then kept
// current by the /api/board/stream Server-Sent Events (`project` and `tasks`). Nothing polls:
// an idle board makes no request. More of a column comes on demand from /api/board/page.

import { api } from "./api.js";

export const PAGE = 50;
const ATTENTION = new Set(["completed", "failed", "plan_review", "review"]);
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10000;

// projects: as /api/board without tasks/cursor, in its order; tasks: project id -> Map(id -> summary).
export const live = { projects: [], tasks: new Map(), cursor: "", failure: null, updatedAt: null, loaded: false, applied: 0 };

let hooks = { onChange: () => {}, onAttention: () => {} };
let source = null;
let retryTimer = null;
let retryMs = FIRST_RETRY_MS;
let loading = null;
// Per project: bumped when its tasks are replaced (a load, a reset): a page asked before that is
// older than what the page holds. gone: ids the stream removed (archived) while a page was
// being asked, which that page may still carry (kept only while one is on its way).
const generation = new Map();
const gone = new Map();
let pagesAsked = 0;
const replaced = (projectId) => { generation.set(projectId, (generation.get(projectId) || 0) + 1); gone.delete(projectId); };

const summaries = (groups) => new Map(Object.values(groups || {}).flat().map((t) => [t.id, t]));

// Starts (or restarts) the board: GET /api/board, then the stream from its cursor.
export function startLive(handlers) {
  hooks = { ...hooks, ...handlers };
  return reload();
}

export function reload() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
  if (!loading) loading = load().finally(() => { loading = null; });
  return loading;
}

async function load() {
  let data;
  try {
    data = await api("/api/board");
  } catch (err) {
    if (err.status !== 401) retry(err.message);  // 401: the sign-in dialog asks, then reload()s
    return;
  }
  live.projects = data.projects.map(({ tasks, cursor, ...project }) => project);
  live.tasks = new Map(data.projects.map((p) => [p.id, summaries(p.tasks)]));
  for (const projectId of new Set([...generation.keys(), ...live.tasks.keys()])) replaced(projectId);
  live.cursor = data.cursor || "";
  live.failure = null;
  live.updatedAt = new Date();
  live.loaded = true;
  retryMs = FIRST_RETRY_MS;
  hooks.onChange("load");
  follow();
}

// The board could not be refreshed: it stays, marked stale, and is asked again with backoff.
function retry(message) {
  live.failure = message;
  hooks.onChange("failure");
  clearTimeout(retryTimer);
  retryTimer = setTimeout(reload, retryMs);
  retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
}

function follow() {
  const stream = new EventSource(`/api/board/stream?cursor=${encodeURIComponent(live.cursor)}`);
  source = stream;
  stream.addEventListener("open", () => {
    retryMs = FIRST_RETRY_MS;
    if (live.failure) { live.failure = null; hooks.onChange("open"); }
  });
  stream.addEventListener("project", (message) => applyProject(JSON.parse(message.data)));
  stream.addEventListener("usage", (message) => applyUsage(JSON.parse(message.data)));
  stream.addEventListener("tasks", (message) => {
    applyTasks(JSON.parse(message.data));
    // EventSource sends it back as Last-Event-ID when it reconnects; kept for a full reload too.
    if (message.lastEventId) live.cursor = message.lastEventId;
  });
  stream.addEventListener("error", () => {
    if (source !== stream) return;
    if (stream.readyState === EventSource.CLOSED) {
      // An error answer (dashboard restarted without our session, bad cursor…): start over.
      source = null;
      retry("the live updates stopped");
    } else if (!live.failure) {
      // The browser reconnects by itself (with Last-Event-ID); until then the board may be behind.
      live.failure = "the live updates were interrupted; reconnecting";
      hooks.onChange("failure");
    }
  });
}

function applyProject(project) {
  const { tasks, cursor, ...entry } = project;
  const index = live.projects.findIndex((p) => p.id === entry.id);
  // `usage` comes in its own event, only when it changed: a project event keeps the one known.
  if (index >= 0) live.projects[index] = { usage: live.projects[index].usage, ...entry };
  else live.projects.push(entry);
  if (!live.tasks.has(entry.id)) live.tasks.set(entry.id, new Map());
  changed("project");
}

function applyUsage({ project: projectId, usage }) {
  const project = live.projects.find((p) => p.id === projectId);
  if (!project) return;
  project.usage = usage;
  changed("usage");
}

function applyTasks({ project: projectId, reset, tasks = [], removed = [] }) {
  let known = live.tasks.get(projectId);
  if (reset || !known) {
    // A reset replaces what the page had for that project; nothing in it is news.
    live.tasks.set(projectId, new Map(tasks.map((t) => [t.id, t])));
    replaced(projectId);
  } else {
    const news = [];
    for (const task of tasks) {
      const before = known.get(task.id);
      known.set(task.id, task);
      gone.get(projectId)?.delete(task.id);  // back from the archive
      // A task that reached completed/failed/plan_review/review (not one merely updated there).
      if (ATTENTION.has(task.status) && (!before || before.status !== task.status)) news.push(task);
    }
    for (const id of removed) {
      known.delete(id);
      if (!pagesAsked) continue;
      if (!gone.has(projectId)) gone.set(projectId, new Set());
      gone.get(projectId).add(id);
    }
    // One call per event: a resumed stream may bring many at once (the page says so once).
    const project = live.projects.find((p) => p.id === projectId);
    if (project && news.length) hooks.onAttention(project, news);
  }
  changed("tasks");
}

function changed(kind) {
  live.applied += 1;
  live.updatedAt = new Date();
  hooks.onChange(kind);
}

// The next page of one column (across projects, or one), after `after` in sort order; tasks
// the page already knows are kept as they are (the stream keeps those current).
export async function fetchPage(status, { after = "", q = "", project = "" } = {}) {
  const params = new URLSearchParams({ status, limit: String(PAGE) });
  if (after) params.set("after", after);
  if (q) params.set("q", q);
  if (project) params.set("project", project);
  const asked = new Map(live.projects.map((p) => [p.id, generation.get(p.id) || 0]));
  let data;
  pagesAsked += 1;
  try {
    data = await api(`/api/board/page?${params}`);
  } finally {
    pagesAsked -= 1;
  }
  for (const { project: projectId, ...task } of data.tasks) {
    // Replaced or removed meanwhile: this answer is older than what the stream brought.
    if ((generation.get(projectId) || 0) !== (asked.get(projectId) || 0)) continue;
    if (gone.get(projectId)?.has(task.id)) continue;
    let known = live.tasks.get(projectId);
    if (!known) live.tasks.set(projectId, (known = new Map()));
    if (!known.has(task.id)) known.set(task.id, task);
  }
  if (!pagesAsked) gone.clear();
  return data.more;
}

export function findSummary(projectId, taskId) {
  return live.tasks.get(projectId)?.get(taskId) || null;
}
