// The kanban: project cards with health, usage and dispatcher controls, and one column per
// status showing a page of task summaries (more on demand). Cards are keyed by project and id
// and only rebuilt when their summary changed; times on them tick locally, without requests.

import { el, age } from "./dom.js";
import { costText, runtimeBadge } from "./runtimes.js";
import { issueLink, sourceRow } from "./sources.js";
import {
  STATUSES, STATUS_LABELS as LABELS, REQUEUED_TEXT, afterText, periods, reasonText, span, usageSince, usageText,
} from "./words.js";

export { STATUSES };

const cardCache = new Map(); // "project/id" -> { task, look, node, outer }
const projectCache = new Map(); // project id -> { stamp, node }

export function buildColumns(board, onMore) {
  for (const status of STATUSES) {
    board.append(el("section", { class: "column", dataset: { status }, "aria-label": LABELS[status] },
      el("h2", {}, el("span", { text: LABELS[status] }), el("span", { class: "count", text: "0" })),
      // A div of role=button cards: a list may hold only list items (axe's "list" rule).
      el("div", { class: "cards" }),
      el("button", { type: "button", class: "more", hidden: true, dataset: { role: "more" },
                     text: "Show more", onclick: () => onMore(status) })));
  }
}

// A time on a card: `tick` tells tick() how to redraw it every second.
function clock(kind, since, prefix = "", suffix = "") {
  const node = el("span", { dataset: { role: kind, tick: kind, since, prefix, suffix }, title: since });
  drawClock(node, Date.now());
  return node;
}

function drawClock(node, now) {
  const { tick, since, prefix, suffix } = node.dataset;
  const elapsed = now - Date.parse(since);
  const text = `${prefix}${tick === "age" ? age(since) : span(elapsed)}${suffix}`;
  if (node.textContent !== text) node.textContent = text;
}

export function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll("[data-tick]")) drawClock(node, now);
}

function times(task) {
  if (task.status === "in_progress" && task.started_at) {
    return [clock("running", task.started_at, "running "),
            task.last_activity_at ? clock("activity", task.last_activity_at, "active ", " ago") : null];
  }
  const finished = task.finished_at && ["completed", "failed", "cancelled"].includes(task.status);
  // A pending task says what its time is: how long it has waited for a worker. A blocked one says
  // nothing of time or of how many it waits for: its blocked line says what it waits for.
  if (task.status === "pending") return [clock("age", task.created_at, "waiting ")];
  if (task.status === "blocked") return [];
  return [finished ? clock("age", task.finished_at, "", " ago") : clock("age", task.created_at)];
}

// Named by its visible text (title, priority, project...): an aria-label that differs from what
// is shown fails axe's label-content-name-mismatch; the column names the status.
function newCard(key, open) {
  return el("div", {
    class: "card", tabindex: 0, role: "button", dataset: { key },
    onclick: open,
    onkeydown: (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); } },
  });
}

function card(project, task, onOpen) {
  const key = `${project.id}/${task.id}`;
  const look = `${project.color}|${project.name}`;
  const cached = cardCache.get(key);
  // Summaries are replaced, never changed in place: the same object means the same card.
  if (cached && cached.task === task && cached.look === look) return cached;
  const runsOn = runtimeBadge(task);
  const priority = task.priority || "medium";
  // A changed task keeps its node and only its insides are drawn again: a click whose press and
  // release straddle a redraw (a running card changes every few seconds) still reaches the card,
  // and the focus and the roving tabindex stay where they were.
  const node = cached ? cached.node : newCard(key, () => onOpen(project.id, task.id));
  node.style.setProperty("--project-color", project.color);
  Object.assign(node.dataset, { project: project.id, id: task.id, status: task.status, priority });
  // The tooltip (the card's insides take no pointer, see the CSS): the whole clamped title, and
  // a failure's code beside its words.
  node.title = task.status === "failed" && task.error_reason ? `${task.title}\n(${task.error_reason})`
    : task.status === "blocked" && task.blocked_reason ? `${task.title}\nblocked: ${task.blocked_reason}`
    : task.status === "cancelled" && task.cancel_reason ? `${task.title}\ncancelled: ${task.cancel_reason}` : task.title;
  node.replaceChildren(...[  // (replaceChildren would write a null as the text "null")
    // Clamped to two lines by the stylesheet; the whole title is in the tooltip and the drawer.
    el("div", { class: "card-title", text: task.title }),
    el("div", { class: "card-meta" },
      el("span", { class: `priority priority-${priority}`, dataset: { role: "priority" }, text: priority }),
      el("span", { text: project.name }), el("span", { text: task.task_type }),
      ...times(task),
      task.cost_usd !== null && task.cost_usd !== undefined
        ? el("span", { dataset: { role: "cost" }, text: costText(task.cost_usd, task.cost_estimated),
                       title: task.cost_estimated ? "estimated from a price table" : undefined }) : null,
      runsOn ? el("span", { class: "runtime-badge", dataset: { role: "runtime" }, text: runsOn,
                            title: task.agent_runtime ? "ran on" : "chosen runtime" }) : null,
      machine(task)),
    task.status === "failed" && task.error_reason
      ? el("div", { class: "card-error", dataset: { code: task.error_reason }, title: task.error_reason,
                    text: reasonText(task.error_reason) }) : null,
    requeuedLine(task),
    blockedLine(task),
    cancelLine(task),
    flags(task)].filter(Boolean));
  const entry = { task, look, node, outer: withIssue(node, task, cached) };
  cardCache.set(key, entry);
  return entry;
}

// A task made from a tracker issue shows the issue's key (ABC-12), a link to it. The link sits
// beside the card, over its corner, not inside it: the card is a button (a link in it would be a
// control nested in another, for axe and for screen readers) whose insides take no pointer. It
// takes no Tab stop on the board (one per card would be hundreds); the drawer has it too.
function withIssue(node, task, cached) {
  if (!task.source || !task.source.identifier) return node;
  const box = cached && cached.outer !== cached.node ? cached.outer : el("div", { class: "card-box" });
  const said = `${task.source.identifier} ${task.source.url || ""}`;
  if (box.firstElementChild === node && box.dataset.issue === said) return box;  // as it was (the usual case)
  box.dataset.issue = said;
  box.style.setProperty("--issue-chars", String(task.source.identifier.length));
  const link = issueLink(task.source, { tabindex: "-1" });
  // Only the link is replaced: the card stays put, or it would lose the keyboard focus.
  if (box.firstElementChild === node && box.children.length === 2) box.lastElementChild.replaceWith(link);
  else box.replaceChildren(node, link);
  return box;
}

// Why it was cancelled, when someone said (e.g. "ENG-4 moved to Done in Linear"): text, clamped
// to two lines (the tooltip and the drawer have it whole).
function cancelLine(task) {
  if (task.status !== "cancelled" || !task.cancel_reason) return null;
  return el("div", { class: "card-cancel", dataset: { role: "cancel-reason" }, text: task.cancel_reason });
}

// ----- executor: dask ----- which machine: the worker that runs (or ran) its latest turn, else
// the box a waiting task is pinned to. Names come from agent.yaml and the workers: text only.
function machine(task) {
  const waiting = task.status === "pending" || task.status === "blocked";
  if (task.worker && !waiting) {
    const running = task.status === "in_progress";
    return el("span", { class: "machine-badge", dataset: { role: "worker" },
                        text: `${running ? "on" : "ran on"} ${task.worker}`,
                        title: running ? "the worker machine running it" : "the worker machine that ran its latest turn" });
  }
  if (task.run_on && waiting) {
    return el("span", { class: "machine-badge", dataset: { role: "run-on" }, text: `pinned to ${task.run_on}`,
                        title: "runs only on this worker machine" });
  }
  return null;
}

// A task back in the queue because the machine running it went away: why it waits again.
function requeuedLine(task) {
  const text = task.status === "pending" && REQUEUED_TEXT[task.error_reason];
  if (!text) return null;
  return el("div", { class: "card-requeued", dataset: { role: "requeued", code: task.error_reason },
                     title: task.error_reason, text });
}

const CHECKS = { success: "checks ✓", failure: "checks ✗", pending: "checks …" };

// ----- dependencies ----- a blocked card says why (the reason names the dependency that failed).
function blockedLine(task) {
  if (task.status !== "blocked") return null;
  return el("div", { class: "card-blocked", dataset: { role: "blocked-reason" },
                     text: `blocked: ${task.blocked_reason || "a dependency failed or was cancelled"}` });
}

// What a person may have to do, or has asked: waits for review, its pull request, messages not
// delivered yet, a landing that is not automatic. Null when there is nothing to say.
function flags(task) {
  const pr = task.pr;
  const checks = pr && CHECKS[pr.checks && typeof pr.checks === "object" ? pr.checks.state : pr.checks];
  const items = [
    task.status === "review" && !pr
      ? el("span", { class: "flag flag-review", dataset: { role: "waits-review" }, text: "waits for review" }) : null,
    task.status === "plan_review"
      ? el("span", { class: "flag flag-review", dataset: { role: "waits-plan" }, text: "plan to approve" }) : null,
    pr ? el("span", { class: `flag flag-pr pr-${pr.state}`, dataset: { role: "pr", state: pr.state },
                      text: [`#${pr.number}`, pr.state, checks].filter(Boolean).join(" · ") }) : null,
    task.inbox ? el("span", { class: "flag flag-inbox", dataset: { role: "inbox" },
                              text: `${task.inbox} message${task.inbox === 1 ? "" : "s"} waiting` }) : null,
    task.landing && task.landing !== "auto"
      ? el("span", { class: "flag flag-landing", dataset: { role: "landing" },
                     text: task.landing === "pr" ? "lands by pull request" : "lands after review" }) : null,
    // Waiting for other tasks: how many it runs after (the drawer lists them; a blocked card's line says why).
    task.depends_on && task.depends_on.length && task.status === "pending"
      ? el("span", { class: "flag flag-after", dataset: { role: "depends", count: task.depends_on.length },
                     text: afterText(task.depends_on.length) }) : null,
  ].filter(Boolean);
  return items.length ? el("div", { class: "card-flags" }, ...items) : null;
}

const bySort = (a, b) => (a.task.sort < b.task.sort ? -1 : a.task.sort > b.task.sort ? 1 : 0);

// view: { projects, tasks (project id -> Map of summaries), projectFilter, search, selectedKey,
// onOpen, limits (status -> cards to show), searchMore (status -> the server has more matches) }.
// Returns, per status, the sort key of the last card shown (where "Show more" continues).
export function renderBoard(board, view) {
  const { projects, tasks, projectFilter, search, selectedKey, onOpen, limits, searchMore } = view;
  const needle = search.trim().toLowerCase();
  const byStatus = Object.fromEntries(STATUSES.map((s) => [s, []]));
  const totals = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  const live = new Set();
  for (const project of projects) {
    // An unavailable project's tasks are not shown: they may be out of date (a notice says so).
    if (!project.healthy || (projectFilter && project.id !== projectFilter)) continue;
    for (const status of STATUSES) totals[status] += (project.counts && project.counts[status]) || 0;
    for (const task of (tasks.get(project.id) || new Map()).values()) {
      if (!byStatus[task.status]) continue;
      if (needle && !`${task.title} ${task.id}`.toLowerCase().includes(needle)) continue;
      byStatus[task.status].push({ project, task });
    }
  }
  const lastShown = {};
  const focused = document.activeElement;
  for (const status of STATUSES) {
    const column = board.querySelector(`.column[data-status="${status}"]`);
    const items = byStatus[status].sort(bySort);
    const shown = items.slice(0, limits[status]);
    for (const { project, task } of shown) live.add(`${project.id}/${task.id}`);
    const entries = shown.map(({ project, task }) => card(project, task, onOpen));
    for (const { node } of entries) node.classList.toggle("selected", node.dataset.key === selectedKey);
    const nodes = entries.map((entry) => entry.outer);
    const list = column.querySelector(".cards");
    // Touch the list only when it changed: moving nodes would take the keyboard focus away.
    const same = nodes.length === list.children.length && nodes.every((node, i) => list.children[i] === node);
    if (!same) list.replaceChildren(...nodes);
    // Exact counts come from the dispatchers; a search counts what it found (+: more on the server).
    const total = needle ? items.length : Math.max(totals[status], items.length);
    const more = shown.length < total || (needle && searchMore[status]);
    column.querySelector(".count").textContent = `${total}${needle && searchMore[status] ? "+" : ""}`;
    const button = column.querySelector(".more");
    button.hidden = !more;
    button.textContent = `Show more (${shown.length} of ${total}${needle && searchMore[status] ? "+" : ""})`;
    lastShown[status] = shown.length ? shown[shown.length - 1].task.sort : "";
  }
  for (const key of cardCache.keys()) if (!live.has(key)) cardCache.delete(key);
  noMatches(board, needle ? search.trim() : "", STATUSES.every((s) => !byStatus[s].length),
            STATUSES.every((s) => s in searchMore));
  // A card keeps its node while its task changes (see card()); one that moved to another column
  // was taken out and put back, which loses the focus: it gets it back, or a keyboard user would
  // be thrown back to the start of the page.
  if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
  return lastShown;
}

// A search that matches nothing: one clear sentence instead of six empty columns (while the server
// has not answered yet, it says it is still looking).
function noMatches(board, search, none, answered) {
  let note = document.getElementById("no-matches");
  const show = Boolean(search) && none;
  board.classList.toggle("searched-empty", show);
  if (!show) { if (note) note.hidden = true; return; }
  if (!note) {
    note = el("p", { id: "no-matches", class: "no-matches", role: "status" });
    board.before(note);
  }
  note.hidden = false;
  const text = answered ? `No tasks match “${search}”` : `No loaded tasks match “${search}”; searching…`;
  if (note.textContent !== text) note.textContent = text;
}

// The strip above the board: cost and tokens of every project, today and over 7 days.
export function renderTotals(container, projects) {
  const { today, week } = periods();
  const sum = (since) => projects.map((p) => usageSince(p.usage, since)).reduce(
    (a, b) => ({ cost: a.cost + b.cost, tokens: a.tokens + b.tokens, tasks: a.tasks + b.tasks }),
    { cost: 0, tokens: 0, tasks: 0 });
  const text = (role, label, total) => el("span", { class: "total", dataset: { role } },
    el("span", { class: "total-label", text: label }), usageText(total));
  container.replaceChildren(text("total-today", "Today ", sum(today)), text("total-week", "7 days ", sum(week)));
}

export function renderProjects(container, projects, handlers) {
  if (!projects.length) {
    container.replaceChildren(el("p", { class: "empty", text: "No projects configured: add them to config/projects.yaml." }));
    return;
  }
  // A project's card is rebuilt only when what it shows changed, so an open "Commits and
  // worktrees" stays open and a focused button keeps its focus.
  const nodes = projects.map((project) => {
    const stamp = JSON.stringify([project.name, project.color, project.description, project.healthy, project.reason,
                                  project.counts, project.dispatcher && project.dispatcher.state,
                                  project.dispatcher && project.dispatcher.workers,
                                  project.dispatcher && project.dispatcher.merge_queue, project.mode, project.problems,
                                  project.agent && project.agent.message,
                                  project.dispatcher && (project.dispatcher.running || []).length,
                                  projectUsage(project)]);
    const cached = projectCache.get(project.id);
    const node = cached && cached.stamp === stamp ? cached.node : projectCard(project, handlers);
    if (!cached || cached.node !== node) {
      const wasOpen = cached && cached.node.querySelector("details").open;
      if (wasOpen) node.querySelector("details").open = true;
      projectCache.set(project.id, { stamp, node });
    }
    placeSource(node, project);
    return node;
  });
  const same = nodes.length === container.children.length && nodes.every((node, i) => container.children[i] === node);
  if (!same) {
    const focused = document.activeElement;
    container.replaceChildren(...nodes);
    if (focused && focused.isConnected) focused.focus();
  }
}

// The project's issue tracker, under its name: kept in place as it changes (its own row, not part
// of the card's stamp: a sync every few seconds must not rebuild the card and lose a focus).
function placeSource(node, project) {
  const row = sourceRow(project);
  const there = node.querySelector('[data-role="source"]');
  if (row === there) return;
  if (there) there.remove();
  if (row) node.querySelector(".project-head").after(row);
}

// "today $0.12 · 3.4k tokens · 7 days $1.20 · 40k tokens" (empty until the project reports usage).
function projectUsage(project) {
  if (!project.usage) return "";
  const { today, week } = periods();
  return `today ${usageText(usageSince(project.usage, today))} · 7 days ${usageText(usageSince(project.usage, week))}`;
}

function projectCard(project, { onDispatcher, onDetails, onAgentLog, onForceStop, onChat, onPlans }) {
  const d = project.dispatcher;
  const counts = project.counts || {};
  const agentless = project.mode === "local";
  const problems = project.healthy ? project.problems || [] : [];
  const health = !project.healthy ? el("span", { class: "badge bad", text: "unavailable" })
    : problems.length ? el("span", { class: "badge warn", text: "degraded" })
    : el("span", { class: "badge ok", text: agentless ? "store only" : "healthy",
                   title: agentless ? undefined : "its baton-agent answers (the tracker sync says its own state below)" });
  // The buttons follow the dispatcher's state: what would do nothing is disabled.
  const running = d && d.state === "running";
  const busy = d ? (d.running || []).length : 0;
  const allowed = { start: d && !running, stop: running, restart: running, force: running || busy > 0 };
  const button = (action, label, onclick = () => onDispatcher(project.id, action)) => el("button", {
    type: "button", text: label, disabled: !project.healthy || agentless || !allowed[action],
    dataset: { action },
    title: agentless ? "needs a running baton-agent" : undefined,
    onclick,
  });
  const details = el("details", { ontoggle: (event) => { if (event.target.open) onDetails(project.id, event.target); } },
    el("summary", { text: "Commits and worktrees" }), el("div", { class: "details-body", text: "Loading…" }));
  return el("article", { class: "project", dataset: { project: project.id, healthy: String(project.healthy) },
                         style: { "--project-color": project.color } },
    el("div", { class: "project-head" },
      el("span", { class: "project-name", text: project.name }), health),
    project.description ? el("div", { class: "counts", text: project.description }) : null,
    project.healthy ? null : el("p", { class: "project-reason", text: project.reason || "unavailable" }),
    problems.length ? el("ul", { class: "project-problems" }, ...problems.map((problem) =>
      el("li", { dataset: { code: problem.code }, text: problem.message }))) : null,
    // The baton-agent this dashboard runs for the project (start: true): its state, and its log.
    project.agent ? el("p", { class: "agent-state", dataset: { role: "agent-state", state: project.agent.state },
                              text: project.agent.message }) : null,
    el("div", { class: "counts" },
      ...STATUSES.filter((s) => counts[s]).map((s) => el("span", { text: `${LABELS[s]}: ${counts[s]}` }))),
    project.usage ? el("div", { class: "counts usage", dataset: { role: "usage" }, text: projectUsage(project) }) : null,
    mergeQueue(d && d.merge_queue),
    el("div", { class: "project-controls" },
      el("span", { class: "state", dataset: { role: "dispatcher-state" },
                   text: d ? `dispatcher ${d.state}${d.workers ? ` · ${d.workers.busy}/${d.workers.max} busy` : ""}` : "dispatcher unknown" }),
      button("start", "Start"), button("stop", "Stop"), button("restart", "Restart"),
      button("force", "Force stop", () => onForceStop(project)),
      project.agent ? el("button", { type: "button", text: "Log", dataset: { role: "agent-log" },
                                     title: "the agent's log (logs/baton-agent.log)",
                                     onclick: () => onAgentLog(project) }) : null),
    // ----- chat and plans ----- (js/chat.js, js/plans.js)
    onChat ? el("div", { class: "project-controls" },
      el("button", { type: "button", text: "Chat", dataset: { role: "open-chat" }, onclick: () => onChat(project.id) }),
      el("button", { type: "button", text: "Plans", dataset: { role: "open-plans" }, onclick: () => onPlans(project.id) }))
      : null,
    details);
}

// The merge queue in landing order: what each finished task waits for, and what it is tested on.
function mergeQueue(entries) {
  if (!entries || !entries.length) return null;
  // "on top of" names the candidate it is built on by its title (ids mean nothing to a person).
  const titles = new Map(entries.map((entry) => [entry.task_id, entry.title]));
  return el("ol", { class: "merge-queue", dataset: { role: "merge-queue" }, title: "Merge queue, in landing order" },
    ...entries.map((entry) => el("li", { dataset: { state: entry.state, task: entry.task_id },
      text: `${entry.title} · ${entry.state}` +
            (entry.on_top_of ? ` on top of “${titles.get(entry.on_top_of) || entry.on_top_of}”` : "") })));
}
