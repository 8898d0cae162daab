// The kanban: project cards with health and dispatcher controls, and one column per status.
// Cards are keyed by project and id and only rebuilt when their task changed.

import { el, age } from "./dom.js";
import { costText, runtimeBadge } from "./runtimes.js";

export const STATUSES = ["pending", "plan_review", "in_progress", "completed", "failed", "cancelled"];
const LABELS = { pending: "Pending", plan_review: "Plan review", in_progress: "In progress",
                 completed: "Completed", failed: "Failed", cancelled: "Cancelled" };
const PRIORITY = { urgent: 3, high: 2, medium: 1, low: 0 };

const cardCache = new Map(); // "project/id" -> { stamp, node, ageNode, created }
const projectCache = new Map(); // project id -> { stamp, node }

export function buildColumns(board) {
  for (const status of STATUSES) {
    board.append(el("section", { class: "column", dataset: { status }, "aria-label": LABELS[status] },
      el("h2", {}, el("span", { text: LABELS[status] }), el("span", { class: "count", text: "0" })),
      el("ul", { class: "cards" })));
  }
}

function order(status, a, b) {
  if (status === "pending") {
    return (PRIORITY[b.task.priority] - PRIORITY[a.task.priority]) || a.task.created_at.localeCompare(b.task.created_at);
  }
  return b.task.updated_at.localeCompare(a.task.updated_at);
}

function card(project, task, onOpen) {
  const key = `${project.id}/${task.id}`;
  const stamp = `${task.updated_at}|${task.status}|${project.color}`;
  const cached = cardCache.get(key);
  if (cached && cached.stamp === stamp) {
    const shown = age(task.created_at);
    if (cached.ageNode.textContent !== shown) cached.ageNode.textContent = shown;  // time moves on
    return cached.node;
  }
  const ageNode = el("span", { text: age(task.created_at), title: task.created_at });
  const open = () => onOpen(project.id, task.id);
  const runsOn = runtimeBadge(task);
  const node = el("li", {
    class: "card", tabindex: 0, role: "button", style: { "--project-color": project.color },
    dataset: { key, project: project.id, id: task.id, status: task.status },
    "aria-label": `${task.title} (${project.name}, ${task.status})`,
    onclick: open,
    onkeydown: (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); } },
  },
    el("div", { class: "card-title", text: task.title }),
    el("div", { class: "card-meta" },
      el("span", { text: project.name }), el("span", { text: task.task_type }),
      ageNode,
      task.cost_usd !== null && task.cost_usd !== undefined
        ? el("span", { dataset: { role: "cost" }, text: costText(task.cost_usd, task.cost_estimated),
                       title: task.cost_estimated ? "estimated from a price table" : undefined }) : null,
      runsOn ? el("span", { class: "runtime-badge", dataset: { role: "runtime" }, text: runsOn,
                            title: task.agent_runtime ? "ran on" : "chosen runtime" }) : null),
    task.status === "failed" && task.error_reason ? el("div", { class: "card-error", text: task.error_reason }) : null);
  cardCache.set(key, { stamp, node, ageNode });
  return node;
}

export function renderBoard(board, projects, { projectFilter, search, selectedKey, onOpen }) {
  const needle = search.trim().toLowerCase();
  const byStatus = Object.fromEntries(STATUSES.map((s) => [s, []]));
  const live = new Set();
  for (const project of projects) {
    if (!project.tasks || (projectFilter && project.id !== projectFilter)) continue;
    for (const status of STATUSES) {
      for (const task of project.tasks[status] || []) {
        if (needle && !`${task.title} ${task.id} ${task.content}`.toLowerCase().includes(needle)) continue;
        byStatus[status].push({ project, task });
        live.add(`${project.id}/${task.id}`);
      }
    }
  }
  for (const key of cardCache.keys()) if (!live.has(key)) cardCache.delete(key);
  const focused = document.activeElement;
  for (const status of STATUSES) {
    const column = board.querySelector(`.column[data-status="${status}"]`);
    const items = byStatus[status].sort((a, b) => order(status, a, b));
    const nodes = items.map(({ project, task }) => card(project, task, onOpen));
    for (const node of nodes) node.classList.toggle("selected", node.dataset.key === selectedKey);
    const list = column.querySelector(".cards");
    // Touch the list only when it changed: moving nodes would take the keyboard focus away.
    const same = nodes.length === list.children.length && nodes.every((node, i) => list.children[i] === node);
    if (!same) list.replaceChildren(...nodes);
    column.querySelector(".count").textContent = String(items.length);
  }
  if (focused && focused.isConnected && document.activeElement !== focused) focused.focus();
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
                                  project.agent && project.agent.message]);
    const cached = projectCache.get(project.id);
    if (cached && cached.stamp === stamp) return cached.node;
    const node = projectCard(project, handlers);
    const wasOpen = cached && cached.node.querySelector("details").open;
    if (wasOpen) node.querySelector("details").open = true;
    projectCache.set(project.id, { stamp, node });
    return node;
  });
  const same = nodes.length === container.children.length && nodes.every((node, i) => container.children[i] === node);
  if (!same) {
    const focused = document.activeElement;
    container.replaceChildren(...nodes);
    if (focused && focused.isConnected) focused.focus();
  }
}

function projectCard(project, { onDispatcher, onDetails, onAgentLog }) {
  const d = project.dispatcher;
  const counts = project.counts || {};
  const agentless = project.mode === "local";
  const problems = project.healthy ? project.problems || [] : [];
  const health = !project.healthy ? el("span", { class: "badge bad", text: "unavailable" })
    : problems.length ? el("span", { class: "badge warn", text: "degraded" })
    : el("span", { class: "badge ok", text: agentless ? "store only" : "healthy" });
  const button = (action, label) => el("button", {
    type: "button", text: label, disabled: !project.healthy || agentless,
    title: agentless ? "needs a running baton-agent" : undefined,
    onclick: () => onDispatcher(project.id, action),
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
    mergeQueue(d && d.merge_queue),
    el("div", { class: "project-controls" },
      el("span", { class: "state", dataset: { role: "dispatcher-state" },
                   text: d ? `dispatcher ${d.state}${d.workers ? ` · ${d.workers.busy}/${d.workers.max} busy` : ""}` : "dispatcher unknown" }),
      button("start", "Start"), button("stop", "Stop"), button("restart", "Restart"),
      project.agent ? el("button", { type: "button", text: "Log", dataset: { role: "agent-log" },
                                     title: "the agent's log (logs/baton-agent.log)",
                                     onclick: () => onAgentLog(project) }) : null),
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
