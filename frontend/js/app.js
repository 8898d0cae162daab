// Wiring: state, the refresh loop, URL state, forms and keyboard shortcuts.

import { showAgentLog } from "./agentlog.js";
import { api, newRequestKey, projectPath, setUnauthorizedHandler } from "./api.js";
import { buildColumns, renderBoard, renderProjects } from "./board.js";
import { closeDrawer, currentTask, openDrawer, refreshDrawer } from "./drawer.js";
import { el, toast } from "./dom.js";
import { runtimeOptions } from "./runtimes.js";

const REFRESH_MS = 2000;
const TASK_TYPES = ["feature", "bugfix", "refactor", "chore", "docs", "test"];
const $ = (id) => document.getElementById(id);
const state = { projects: [], projectFilter: "", search: "", loaded: false, failure: null, updatedAt: null };
let timer = null;
let inFlight = false;
let refreshes = 0;

// ----- URL state: ?project=<id>&task=<project>/<id>&q=<search> ----------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.projectFilter = params.get("project") || "";
  state.search = params.get("q") || "";
  const task = params.get("task");
  return task && task.includes("/") ? task.split("/", 2) : null;
}

function writeUrl() {
  const params = new URLSearchParams();
  if (state.projectFilter) params.set("project", state.projectFilter);
  if (state.search) params.set("q", state.search);
  const open = currentTask();
  if (open) params.set("task", `${open.projectId}/${open.taskId}`);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

// ----- data ------------------------------------------------------------------------------

function findTask(projectId, taskId) {
  const project = state.projects.find((p) => p.id === projectId);
  if (!project || !project.tasks) return null;
  for (const list of Object.values(project.tasks)) {
    const task = list.find((t) => t.id === taskId);
    if (task) return task;
  }
  return null;
}

function render() {
  renderProjects($("projects"), state.projects,
                 { onDispatcher: dispatcherAction, onDetails: loadDetails, onAgentLog: showAgentLog });
  const notices = state.projects.filter((p) => !p.healthy).map((p) =>
    el("div", { class: "notice", dataset: { project: p.id } },
      `${p.name} is unavailable: ${p.reason || "no answer"}. Its tasks are not shown until it answers again.`,
      p.agent && p.agent.state !== "running" ? ` (${p.agent.message})` : ""));
  for (const p of state.projects.filter((p) => p.healthy && (p.problems || []).length)) {
    notices.push(el("div", { class: "notice warn", dataset: { project: p.id, role: "degraded" } },
      `${p.name} is degraded: ${p.problems.map((problem) => problem.message).join("; ")}`));
  }
  if (state.failure) {
    const when = state.updatedAt ? state.updatedAt.toLocaleTimeString() : "the start";
    notices.unshift(el("div", { class: "notice", dataset: { role: "stale" } },
      `The board could not be updated (${state.failure}); it shows the state of ${when}.`));
  }
  $("notices").replaceChildren(...notices);
  const open = currentTask();
  renderBoard($("board"), state.projects, {
    projectFilter: state.projectFilter, search: state.search,
    selectedKey: open ? `${open.projectId}/${open.taskId}` : "", onOpen: showTask,
  });
  refreshDrawer(findTask, refreshSoon, projectProblem(open && open.projectId));
}

function projectProblem(projectId) {
  if (!projectId) return null;
  if (state.failure) return state.failure;
  const project = state.projects.find((p) => p.id === projectId);
  return !project ? "not configured" : project.healthy ? null : project.reason || "unavailable";
}

function fillProjectSelects() {
  const options = state.projects.map((p) => el("option", { value: p.id, text: p.name }));
  const filter = $("project-filter");
  filter.replaceChildren(el("option", { value: "", text: "All projects" }), ...options.map((o) => o.cloneNode(true)));
  filter.value = state.projectFilter;
  for (const form of ["new-task-form", "bulk-form"]) {
    const select = $(form).elements.project;
    const keep = select.value;
    select.replaceChildren(...options.map((o) => o.cloneNode(true)));
    if (keep) select.value = keep;
    else if (state.projectFilter) select.value = state.projectFilter;
  }
}

async function refresh() {
  if (inFlight) return;
  inFlight = true;
  clearTimeout(timer);
  try {
    const data = await api("/api/board");
    const known = state.projects.map((p) => p.id).join();
    state.projects = data.projects;
    state.failure = null;
    state.updatedAt = new Date();
    if (state.projects.map((p) => p.id).join() !== known) fillProjectSelects();
    render();
    document.body.dataset.refreshes = String(++refreshes);  // lets tests wait for a refresh
    if (!state.loaded) {
      state.loaded = true;
      document.body.dataset.boardReady = "1";
      document.body.dataset.boardReadyMs = String(Math.round(performance.now()));
    }
  } catch (err) {
    if (err.status !== 401) {
      state.failure = err.message;  // the board stays, marked as stale
      render();
    }
  } finally {
    inFlight = false;
    // The next refresh is scheduled only after this one finished: requests never pile up.
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

function refreshSoon() {
  clearTimeout(timer);
  timer = setTimeout(refresh, 150);
}

// ----- actions ---------------------------------------------------------------------------

function showTask(projectId, taskId) {
  openDrawer(projectId, taskId, findTask, refreshSoon, projectProblem(projectId));
  writeUrl();
  render();
}

function hideTask() {
  const closed = closeDrawer();
  writeUrl();
  render();
  // Back to where the person was: the card of the task they closed.
  if (closed) document.querySelector(`.card[data-key="${CSS.escape(`${closed.projectId}/${closed.taskId}`)}"]`)?.focus();
}

async function dispatcherAction(projectId, action) {
  try {
    const status = await api(projectPath(projectId, `/dispatcher/${action}`), { method: "POST" });
    toast(`Dispatcher ${status.state}`);
  } catch (err) {
    toast(`Could not ${action} the dispatcher: ${err.message}`);
  }
  refreshSoon();
}

async function loadDetails(projectId, details) {
  const body = details.querySelector(".details-body");
  try {
    const [commits, worktrees] = await Promise.all([
      api(projectPath(projectId, "/commits?count=10")), api(projectPath(projectId, "/worktrees"))]);
    body.replaceChildren(
      el("strong", { text: "Recent commits" }),
      el("ul", {}, ...commits.map((c) => el("li", { title: `${c.author} · ${c.date}` },
        el("code", { text: c.sha.slice(0, 8) }), " ", c.message))),
      el("strong", { text: "Worktrees" }),
      el("ul", {}, ...worktrees.worktrees.map((w) => el("li", { text: `${w.branch || "(detached)"} — ${w.path}` }))));
  } catch (err) {
    body.textContent = `Unavailable: ${err.message}`;
  }
}

function setupDialog(dialogId, formId, submit) {
  const dialog = $(dialogId);
  const form = $(formId);
  const error = form.querySelector('[data-role="error"]');
  form.querySelector('[data-role="cancel"]')?.addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    try {
      await submit(new FormData(form), form);
      dialog.close();
      form.reset();
      refreshSoon();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
  return () => {
    fillProjectSelects();
    error.hidden = true;
    dialog.showModal();
    form.querySelector("input, textarea")?.focus();
  };
}

// Creates carry an Idempotency-Key: a fresh one per submission, the same one when the person
// submits the very same thing again after an error (a timed-out create may have happened).
function oncePerSubmission() {
  let last = null;  // { what, key } of the submission that has not succeeded yet
  return async (path, body) => {
    const what = JSON.stringify([path, body]);
    if (!last || last.what !== what) last = { what, key: newRequestKey() };
    const result = await api(path, { method: "POST", body, headers: { "Idempotency-Key": last.key } });
    last = null;
    return result;
  };
}
const createTask = oncePerSubmission();
const createBulk = oncePerSubmission();

const openForm = setupDialog("new-task-dialog", "new-task-form", async (data) => {
  const model = String(data.get("model") || "").trim();
  const task = await createTask(projectPath(data.get("project"), "/tasks"), {
    title: data.get("title"), content: data.get("content") || "", task_type: data.get("task_type"),
    priority: data.get("priority"), needs_plan_review: data.get("needs_plan_review") === "on",
    runtime: data.get("runtime") || null, model: model || null,  // null: the project's defaults
  });
  toast(`Created ${task.id}`);
});

// The Runtime select offers what the chosen project configures (asked each time the form opens
// or the project changes); if that cannot be asked, the project's default is still there.
let runtimesAsked = 0;
async function fillRuntimes() {
  const form = $("new-task-form");
  const select = form.elements.runtime;
  const projectId = form.elements.project.value;
  const keep = select.value;
  const asked = ++runtimesAsked;
  delete form.dataset.runtimesFor;  // set again once this (the latest) list is in
  let data = null;
  if (projectId) {
    try { data = await api(projectPath(projectId, "/runtimes")); } catch (err) { data = null; }
  }
  if (asked !== runtimesAsked) return;  // another project was chosen meanwhile
  select.replaceChildren(...runtimeOptions(data));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  form.dataset.runtimesFor = projectId;  // lets tests wait for the list
}
$("new-task-form").elements.project.addEventListener("change", fillRuntimes);
const openNewTask = () => { openForm(); fillRuntimes(); };

const openBulk = setupDialog("bulk-dialog", "bulk-form", async (data) => {
  const titles = String(data.get("lines") || "").split("\n").map((l) => l.trim()).filter(Boolean);
  if (!titles.length) throw new Error("write one task per line");
  const result = await createBulk(projectPath(data.get("project"), "/tasks/bulk"), {
    tasks: titles.map((title) => ({ title, task_type: data.get("task_type") })),
  });
  toast(`Created ${result.tasks.length} tasks`);
});

// ----- sign-in (only when the dashboard has a token) --------------------------------------

setUnauthorizedHandler(() => { if (!$("login-dialog").open) $("login-dialog").showModal(); });
$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = event.target.querySelector('[data-role="error"]');
  try {
    await api("/api/session", { method: "POST", body: { token: event.target.elements.token.value } });
    event.target.reset();
    error.hidden = true;
    $("login-dialog").close();
    refresh();
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
});

$("logout-button").addEventListener("click", async () => {
  try {
    await api("/api/session", { method: "DELETE" });  // ends the session on the server too
  } catch (err) {
    toast(`Could not sign out: ${err.message}`);
    return;
  }
  location.reload();  // nothing of the board stays on the page; it asks for the token again
});
api("/api/health").then((health) => { $("logout-button").hidden = !health.auth; }).catch(() => {});

// ----- start -----------------------------------------------------------------------------

buildColumns($("board"));
for (const select of document.querySelectorAll('select[name="task_type"]')) {
  select.replaceChildren(...TASK_TYPES.map((type) => el("option", { value: type, text: type })));
}
const linked = readUrl();
$("search").value = state.search;
$("search").addEventListener("input", (event) => { state.search = event.target.value; writeUrl(); render(); });
$("project-filter").addEventListener("change", (event) => { state.projectFilter = event.target.value; writeUrl(); render(); });
$("new-task-button").addEventListener("click", openNewTask);
$("bulk-button").addEventListener("click", openBulk);
$("drawer-close").addEventListener("click", hideTask);
document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (event.key === "Escape" && !$("drawer").hidden && !document.querySelector("dialog[open]")) {
    hideTask();
  } else if (!typing && event.key === "/") {
    event.preventDefault(); $("search").focus();
  } else if (!typing && event.key === "n" && !document.querySelector("dialog[open]")) {
    event.preventDefault(); openNewTask();
  }
});
refresh().then(() => { if (linked) showTask(linked[0], linked[1]); });
