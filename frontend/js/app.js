// Wiring: state, the live board (js/live.js), URL state, forms and keyboard shortcuts.

import { showAgentLog } from "./agentlog.js";
import { api, newRequestKey, projectPath, setUnauthorizedHandler } from "./api.js";
import { STATUSES, buildColumns, renderBoard, renderProjects, renderTotals, tick } from "./board.js";
import { attachToNewTask } from "./attachments.js";
import { closeDrawer, currentTask, openDrawer, refreshDrawer, setTaskOpener } from "./drawer.js";
import { el, toast } from "./dom.js";
import { setupKeys } from "./keys.js";
import { setupColumnPicker, setupProjectsBox } from "./layout.js";
import { PAGE, fetchPage, findSummary, live, reload, startLive } from "./live.js";
import { announce, notifyToggle } from "./notify.js";
import { runtimeOptions } from "./runtimes.js";
// ----- chat and plans -----
import { chatView } from "./chat.js";
import { boardChanged, plansView, setupPlans } from "./plans.js";
import { closeWorkspace, refocusWorkspace, registerView, setupWorkspace, showView, workspaceFromUrl, workspaceOpen,
         workspaceParams } from "./workspace.js";

const TASK_TYPES = ["feature", "bugfix", "refactor", "chore", "docs", "test"];
const $ = (id) => document.getElementById(id);
const state = { projectFilter: "", search: "" };

// ----- URL state: ?project=<id>&task=<project>/<id>&q=<search> ----------------------------
// Opening a task pushes a history entry (Back closes the drawer, Forward opens it again); search
// and project filter replace the current entry.

function taskFromUrl() {
  const task = new URLSearchParams(location.search).get("task");
  return task && task.includes("/") ? task.split("/", 2) : null;
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.projectFilter = params.get("project") || "";
  state.search = params.get("q") || "";
  return taskFromUrl();
}

function writeUrl(push = false) {
  const params = new URLSearchParams();
  if (state.projectFilter) params.set("project", state.projectFilter);
  if (state.search) params.set("q", state.search);
  const open = currentTask();
  if (open) params.set("task", `${open.projectId}/${open.taskId}`);
  for (const [name, value] of workspaceParams()) params.set(name, value);  // chat and plans
  const query = params.toString();
  const url = query ? `?${query}` : location.pathname;
  // {pushed: true} marks an entry this page added: closing the drawer there goes Back to it.
  if (push) history.pushState({ pushed: true }, "", url);
  else history.replaceState(open ? history.state : null, "", url);
}

window.addEventListener("popstate", () => {
  const linked = taskFromUrl();
  const open = currentTask();
  if (linked && (!open || open.projectId !== linked[0] || open.taskId !== linked[1])) {
    showTask(linked[0], linked[1], { fromHistory: true });
  } else if (!linked && open) {
    hideTask({ fromHistory: true });
  }
  writeUrl();  // the entry keeps today's search and filter, not the ones it had
});

// ----- data: live by change (js/live.js) ------------------------------------------------

const findTask = findSummary;  // the drawer gets the board's summary; it reads the full task itself
const limits = Object.fromEntries(STATUSES.map((s) => [s, PAGE]));  // cards shown per column
const searchMore = {};  // status -> the server has more matches for the current search
let lastShown = {};  // status -> sort key of the last card shown ("Show more" continues there)
let renderTimer = null;
let knownProjects = "";
let noticesSaid = "";

// Stream events come one by one; the page is drawn once per burst.
function renderSoon() {
  if (renderTimer === null) renderTimer = setTimeout(render, 30);
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = null;
  const projects = live.projects;
  if (projects.map((p) => p.id).join() !== knownProjects) {
    knownProjects = projects.map((p) => p.id).join();
    fillProjectSelects();
  }
  renderProjects($("projects"), projects, { onDispatcher: dispatcherAction, onDetails: loadDetails,
                                            onAgentLog: showAgentLog, onForceStop: confirmForceStop,
                                            onChat: (id) => showView("chat", id), onPlans: (id) => showView("plans", id) });
  renderTotals(totalsBox, projects);
  const notices = projects.filter((p) => !p.healthy).map((p) =>
    el("div", { class: "notice", dataset: { project: p.id } },
      `${p.name} is unavailable: ${p.reason || "no answer"}. Its tasks are not shown until it answers again.`,
      p.agent && p.agent.state !== "running" ? ` (${p.agent.message})` : ""));
  for (const p of projects.filter((p) => p.healthy && (p.problems || []).length)) {
    notices.push(el("div", { class: "notice warn", dataset: { project: p.id, role: "degraded" } },
      `${p.name} is degraded: ${p.problems.map((problem) => problem.message).join("; ")}`));
  }
  if (live.failure) {
    const when = live.updatedAt ? live.updatedAt.toLocaleTimeString() : "the start";
    notices.unshift(el("div", { class: "notice", dataset: { role: "stale" } },
      `The board could not be updated (${live.failure}); it shows the state of ${when}.`));
  }
  // #notices is aria-live: redrawn only when what it says changed, or a screen reader would say
  // it again at every change of any task.
  const said = JSON.stringify(notices.map((n) => [n.className, n.dataset.project, n.textContent]));
  if (said !== noticesSaid) {
    noticesSaid = said;
    $("notices").replaceChildren(...notices);
  }
  const open = currentTask();
  lastShown = renderBoard($("board"), {
    projects, tasks: live.tasks, projectFilter: state.projectFilter, search: state.search,
    selectedKey: open ? `${open.projectId}/${open.taskId}` : "", onOpen: showTask, limits, searchMore,
  });
  refreshDrawer(findTask, refreshSoon, projectProblem(open && open.projectId));
  boardChanged();  // chat and plans: an open plan follows its tasks
  // Lets tests wait for stream events to be on the page.
  document.body.dataset.changes = String(live.applied);
  if (live.loaded && !document.body.dataset.boardReady) {
    document.body.dataset.boardReady = "1";
    document.body.dataset.boardReadyMs = String(Math.round(performance.now()));
  }
}

function projectProblem(projectId) {
  if (!projectId) return null;
  if (live.failure) return live.failure;
  const project = live.projects.find((p) => p.id === projectId);
  return !project ? "not configured" : project.healthy ? null : project.reason || "unavailable";
}

function fillProjectSelects() {
  const options = live.projects.map((p) => el("option", { value: p.id, text: p.name }));
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

// Nothing to ask: the stream brings every change. Kept for callers that used to ask for a refresh.
function refreshSoon() { renderSoon(); }

// "Show more": 50 more cards; the next page is asked from the server after the last card shown
// (what the page holds may have gaps past the first window).
async function showMore(status) {
  const after = lastShown[status];
  limits[status] += PAGE;
  try {
    const more = await fetchPage(status, { after, q: state.search.trim(), project: state.projectFilter });
    if (state.search.trim()) searchMore[status] = more;
  } catch (err) {
    toast(`Could not load more: ${err.message}`);
  }
  render();
}

// A search filters the cards the page holds at once, and asks the server for matches it does not hold.
let searchTimer = null;
let searchAsked = 0;
function searchServer() {
  clearTimeout(searchTimer);
  for (const status of STATUSES) { limits[status] = PAGE; delete searchMore[status]; }
  const q = state.search.trim();
  if (!q) return;
  searchTimer = setTimeout(async () => {
    const asked = ++searchAsked;
    const answers = await Promise.all(STATUSES.map((status) =>
      fetchPage(status, { q, project: state.projectFilter }).catch(() => false)));
    if (asked !== searchAsked) return;  // typed on meanwhile
    STATUSES.forEach((status, i) => { searchMore[status] = answers[i]; });
    render();
  }, 250);
}

// ----- actions ---------------------------------------------------------------------------

function showTask(projectId, taskId, { fromHistory = false } = {}) {
  const wasOpen = Boolean(currentTask());
  openDrawer(projectId, taskId, findTask, refreshSoon, projectProblem(projectId));
  // A new entry only when the drawer opens; switching tasks inside it replaces the entry.
  if (!fromHistory) writeUrl(!wasOpen);
  render();
}

function hideTask({ fromHistory = false } = {}) {
  const closed = closeDrawer();
  if (!fromHistory) {
    if (closed && history.state && history.state.pushed) history.back();  // the entry before the drawer opened
    else writeUrl();
  }
  render();
  // Back to where the person was: the plan they opened it from, or the card of the task they closed.
  if (closed && !refocusWorkspace()) document.querySelector(`.card[data-key="${CSS.escape(`${closed.projectId}/${closed.taskId}`)}"]`)?.focus();
}

async function dispatcherAction(projectId, action, { force = false } = {}) {
  try {
    const status = await api(projectPath(projectId, `/dispatcher/${action}${force ? "?force=true" : ""}`),
                             { method: "POST" });
    // The buttons change when the stream says so (within a second): the answer is not applied
    // here, or a change made elsewhere meanwhile could leave the page on a state nobody reports.
    toast(`Dispatcher ${status.state}`);
  } catch (err) {
    toast(`Could not ${action} the dispatcher: ${err.message}`);
  }
}

// Force stop interrupts running agents (their tasks go back to pending): asked first, naming how many.
let forceDialog = null;
function confirmForceStop(project) {
  if (!forceDialog) {
    forceDialog = el("dialog", { id: "force-stop-dialog", "aria-labelledby": "force-stop-title" },
      el("form", { method: "dialog" },
        el("h2", { id: "force-stop-title" }),
        el("p", { dataset: { role: "force-stop-text" } }),
        el("div", { class: "buttons" },
          el("button", { type: "submit", value: "cancel", text: "Cancel", autofocus: true }),
          el("button", { type: "submit", value: "force", class: "danger", text: "Force stop" }))));
    document.body.append(forceDialog);
    forceDialog.addEventListener("close", () => {
      const target = forceDialog.dataset.project;
      if (forceDialog.returnValue === "force" && target) dispatcherAction(target, "stop", { force: true });
    });
  }
  const running = (project.dispatcher && project.dispatcher.running) || [];
  const count = running.length;
  forceDialog.dataset.project = project.id;
  forceDialog.returnValue = "";
  forceDialog.querySelector("h2").textContent = `Force stop ${project.name}?`;
  forceDialog.querySelector('[data-role="force-stop-text"]').textContent = count
    ? `${count} running task${count === 1 ? "" : "s"} will be interrupted and put back to pending`
      + ` (${running.map((r) => `“${r.title}”`).join(", ")}). The dispatcher stops claiming new tasks.`
    : "No task is running. The dispatcher stops claiming new tasks.";
  forceDialog.showModal();
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
    landing: data.get("landing") || null,
  });
  toast(`Created “${task.title}”`);  // named as the person wrote it (the id means nothing to them)
  const files = data.getAll("files").filter((file) => file && file.name);  // attachments: after the create
  if (files.length) await attachToNewTask(data.get("project"), task, files);
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
    reload();
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

buildColumns($("board"), showMore);
// The cost and token totals above the board, with the "Notify me" toggle.
const totalsBox = el("div", { class: "totals-figures" });
$("board").before(el("section", { id: "totals", class: "totals", "aria-label": "Cost and tokens, all projects" },
  totalsBox, notifyToggle()));
for (const select of document.querySelectorAll('select[name="task_type"]')) {
  select.replaceChildren(...TASK_TYPES.map((type) => el("option", { value: type, text: type })));
}
const linked = readUrl();
$("search").value = state.search;
$("search").addEventListener("input", (event) => { state.search = event.target.value; writeUrl(); searchServer(); render(); });
$("project-filter").addEventListener("change", (event) => { state.projectFilter = event.target.value; writeUrl(); searchServer(); render(); });
$("new-task-button").addEventListener("click", openNewTask);
$("bulk-button").addEventListener("click", openBulk);
$("drawer-close").addEventListener("click", () => hideTask());
document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (event.key === "Escape" && !$("drawer").hidden && !document.querySelector("dialog[open]")) {
    hideTask();
  } else if (event.key === "Escape" && workspaceOpen() && !document.querySelector("dialog[open]")) {
    closeWorkspace();  // chat and plans
  } else if (!typing && event.key === "/" && !workspaceOpen()) {
    event.preventDefault(); $("search").focus();
  } else if (!typing && event.key === "n" && !document.querySelector("dialog[open]")) {
    event.preventDefault(); openNewTask();
  }
});
setupKeys({ board: $("board"), drawer: $("drawer"), skipLink: document.querySelector(".skip-link") });
setTaskOpener((projectId, taskId) => showTask(projectId, taskId));  // the drawer's links to other tasks
setupColumnPicker($("column-picker"), $("board"));
setupProjectsBox($("projects-box"), $("projects-summary"));
// ----- chat and plans: the panel, its views, and where the URL asks it to open -----
setupWorkspace({ onChange: () => writeUrl(), projectName: (id) => live.projects.find((p) => p.id === id)?.name || id });
registerView("chat", chatView);
registerView("plans", plansView);
setupPlans({ openTask: (projectId, taskId) => showTask(projectId, taskId) });
const linkedPanel = workspaceFromUrl(new URLSearchParams(location.search));
// Running times and ages tick here, on the page: no request.
setInterval(tick, 1000);
let first = true;
startLive({
  onChange: () => {
    renderSoon();
    if (first && live.loaded) {
      first = false;
      render();
      searchServer();  // a search from the URL also asks the server
      if (linkedPanel) showView(linkedPanel.view, linkedPanel.projectId, linkedPanel.itemId);
      if (linked) showTask(linked[0], linked[1], { fromHistory: true });
    }
  },
  onAttention: (project, tasks) => announce(project, tasks, showTask),
});
