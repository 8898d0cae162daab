// The task drawer: details, actions and the live transcript (Server-Sent Events).

import { api, projectPath } from "./api.js";
import { resetAttachments, showAttachments } from "./attachments.js";
import { el, toast } from "./dom.js";
import { knownPlanTitle, planTitle } from "./plans.js";
import { resetReview, showReview } from "./review.js";
import { costText } from "./runtimes.js";
import { reasonText, span, statusText } from "./words.js";
import { showView } from "./workspace.js";
import { issueLink } from "./sources.js";

const KINDS = ["session_started", "assistant_text", "tool_use", "tool_result", "result", "system", "unparsed",
               "baton", "human"];
const OPEN = new Set(["pending", "in_progress", "plan_review"]);
const SETTLED = new Set(["plan_review", "review", "completed", "failed", "cancelled"]);
// A cancel is sent only after this long unless undone: closing the page meanwhile cancels nothing.
const UNDO_MS = 5000;
let stream = null;
let current = null; // { projectId, taskId }
let full = null; // the task as last read in full (GET …/tasks/{status}/{id}.md), for `current`
let reads = 0; // numbers the reads: an answer older than the latest is dropped
const cancelling = new Map(); // "project/id" -> timer of a cancel not sent yet (Undo stops it)
let lookup = () => null; // (project, id) -> the board's summary of a task, if it holds one
let opener = null; // (project, id) -> opens a task as a click on its card does (app.js)

// How a link in the drawer opens another task (the URL and history follow, as for a card).
export function setTaskOpener(open) { opener = open; }

const $ = (id) => document.getElementById(id);

export function currentTask() { return current; }

export function closeDrawer() {
  if (stream) stream.close();
  stream = null;
  const closed = current;
  current = null;
  full = null;
  shownArgs = null;
  resetReview();
  $("drawer-review").replaceChildren();
  $("drawer-deps").replaceChildren();
  $("drawer-deps").hidden = true;
  resetAttachments($("drawer-attachments"));
  $("drawer").hidden = true;
  return closed;
}

function line(event) {
  const kind = event.kind || "event";
  let text = "";
  let failed = false;
  switch (kind) {
    case "session_started": text = ["session", event.session_id, event.model].filter(Boolean).join(" · "); break;
    case "assistant_text": text = event.text || ""; break;
    // Tool names differ per runtime (Claude Code's Bash/Edit, Codex's command/edit, OpenCode's bash...).
    case "tool_use": text = `${event.tool_name || "tool"}: ${event.tool_input || ""}`; break;
    case "tool_result":
      failed = event.ok === false;
      text = `${event.tool_name ? `${event.tool_name} ` : ""}${failed ? "error" : "ok"}${event.text ? `: ${event.text}` : ""}`;
      break;
    case "result":
      failed = event.ok === false;
      text = failed
        ? `${event.subtype || "error"}: ${(event.errors || []).join("; ") || event.text || ""}`
        : [event.text || "done", `${event.num_turns ?? "?"} turns`, costText(event.cost_usd, event.cost_estimated, true)]
          .filter(Boolean).join(" · ");
      break;
    // A runtime's notes (a denied permission, Codex's errors and retries) carry their subtype.
    case "system": text = [event.subtype, event.text].filter(Boolean).join(": ") || JSON.stringify(event); break;
    default: text = event.text || JSON.stringify(event);
  }
  if (kind === "human") return humanLine(event);
  if (kind === "baton" && event.subtype === "attempt_started" && event.attempt) {
    // Each run of the task starts here: a separator instead of the line.
    const when = event.ts ? new Date(event.ts).toLocaleString() : "";
    return el("li", { class: "attempt-separator", dataset: { seq: event.seq, kind: "attempt", attempt: event.attempt } },
      [`Attempt ${event.attempt}`, when].filter(Boolean).join(" · "));
  }
  return el("li", { class: `${kind}${failed ? " failed" : ""}`, dataset: { seq: event.seq, kind } },
    el("span", { class: "kind", text: kind.replace("_", " ") }), text);
}

// What a person said or decided, apart from the agent's lines: the text, then each comment on a line.
const HUMAN = { message: "you wrote", changes: "you requested changes", revise: "you asked to revise the plan",
                approved: "you approved", plan_approved: "you approved the plan", rejected: "you rejected" };

function humanLine(event) {
  const comments = event.comments || [];
  return el("li", { class: "human", dataset: { seq: event.seq, kind: "human", subtype: event.subtype || "" } },
    el("span", { class: "kind", text: HUMAN[event.subtype] || "a person" }),
    event.text || "",
    comments.length ? el("ul", { class: "human-comments" }, ...comments.map((c) => el("li", {},
      el("code", { text: `${c.path}${c.line ? `:${c.side === "old" ? "old " : ""}${c.line}` : ""}` }), " ", c.text || "")))
      : null);
}

// A running task's duration is a clock that board.js tick() redraws every second, as on its card.
function duration(task) {
  if (!task.started_at) return "";
  if (task.finished_at) return span(Date.parse(task.finished_at) - Date.parse(task.started_at));
  if (task.status !== "in_progress") return "";
  return el("span", { dataset: { tick: "running", since: task.started_at, prefix: "", suffix: "" },
                      text: span(Date.now() - Date.parse(task.started_at)) });
}

// `runs` counts every start; `attempts` only those since the last rerun.
function attempts(task) {
  const runs = task.runs ?? task.attempts;
  if (runs === null || runs === undefined) return "";
  return task.attempts !== undefined && task.attempts !== null && task.attempts !== runs
    ? `${runs} (${task.attempts} since the last rerun)` : String(runs);
}

// The plan a task came from, by its title, a link that opens it in the Plans view (the drawer
// closes as its × closes it, so the URL and history follow).
function planLink(projectId, task) {
  const planId = task.plan_id;
  const link = el("a", { href: `?plans=${encodeURIComponent(`${projectId}/${planId}`)}`, dataset: { role: "plan-link", plan: planId },
                         text: knownPlanTitle(projectId, planId) || "the plan…",
                         onclick: (event) => {
                           if (event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
                           event.preventDefault();
                           $("drawer-close").click();
                           showView("plans", projectId, planId);
                         } });
  if (!knownPlanTitle(projectId, planId)) {
    planTitle(projectId, planId).then((title) => { link.textContent = title || `${planId} (deleted)`; },
                                      () => { link.textContent = planId; });
  }
  return el("span", {}, link, task.ref ? ` · ${task.ref}` : "");
}

function meta(task, projectId) {
  const rows = [
    ["Status", statusText(task.status)],
    // Why it was cancelled, when someone said (the sync of its issue, a person): as plain text.
    ["Reason", task.status === "cancelled" && task.cancel_reason ? task.cancel_reason : ""],
    ["Type", task.task_type], ["Priority", task.priority],
    ["Runtime", `${task.runtime || "project default"}${task.agent_runtime ? ` · ran on ${task.agent_runtime}` : ""}`],
    ["Model", task.model || task.agent_model
      ? `${task.model || "runtime default"}${task.agent_model ? ` · reported ${task.agent_model}` : ""}` : ""],
    // executor: dask: the worker machine of its latest turn, and the box it is pinned to.
    ["Machine", [task.worker ? `${task.status === "in_progress" ? "on" : "ran on"} ${task.worker}` : "",
                 task.run_on ? `pinned to ${task.run_on}` : ""].filter(Boolean).join(" · ")],
    ["Cost", costText(task.cost_usd, task.cost_estimated, true)],
    ["Tokens", task.input_tokens !== null && task.input_tokens !== undefined
      ? `${task.input_tokens} in · ${task.output_tokens ?? 0} out · ${task.cache_read_tokens ?? 0} cached` : ""],
    ["Turns", task.num_turns ?? ""], ["Duration", duration(task)], ["Attempts", attempts(task)],
    ["Landing", task.landing && task.landing !== "auto" ? (task.landing === "pr" ? "pull request" : "after review") : ""],
    ["Plan", task.plan_id ? planLink(projectId, task) : ""],
    ["Issue", task.source && task.source.identifier ? issueLink(task.source) : ""],  // Linear, Jira
    ["Branch", task.branch || ""], ["Commit", task.commit_sha || (task.no_changes ? "no changes" : "")],
    // In words, with the code the logs and the API carry.
    ["Failure", task.error_reason ? `${reasonText(task.error_reason)} (${task.error_reason})` : ""], ["Id", task.id],
  ].filter(([, value]) => value !== "" && value !== null && value !== undefined);
  return el("dl", { class: "meta" }, ...rows.flatMap(([k, v]) => [
    el("dt", { text: k }), el("dd", { dataset: { field: k.toLowerCase() } }, v instanceof Node ? v : String(v))]));
}

async function act(projectId, taskId, action, onChange) {
  try {
    await api(projectPath(projectId, `/tasks/${taskId}/${action}`), { method: "POST" });
    toast(action === "rerun" ? "Task queued again" : "Task cancelled");
    if (action === "rerun") follow(projectId, taskId, onChange);  // a new run: a new transcript
  } catch (err) {
    toast(`${action} failed: ${err.message}`);
  }
  onChange();
}

// Cancel with a short undo: the request goes only when the toast's time is up.
function cancelLater(projectId, taskId, title, onChange) {
  const key = `${projectId}/${taskId}`;
  if (cancelling.has(key)) return;
  const timer = setTimeout(() => {
    cancelling.delete(key);
    act(projectId, taskId, "cancel", onChange);
  }, UNDO_MS);
  cancelling.set(key, timer);
  toast(`Cancelling “${title}”`, { timeout: UNDO_MS, action: { label: "Undo", run: () => {
    clearTimeout(cancelling.get(key));
    cancelling.delete(key);
    toast(`Kept “${title}”`);
    redrawActions();
  } } });
  redrawActions();
}

let shownStamp = "";
let shownStatus = ""; // the status the drawer last showed, to notice a settled task moving on
let shownArgs = null; // what showDetails last drew, to redraw the buttons after an Undo

function redrawActions() {
  if (shownArgs) showDetails(...shownArgs);
}

// What the board knows of a task (its summary) changed: the drawer is drawn again. The whole
// summary but its last activity, which changes every few seconds while output flows and is
// nothing the drawer shows (derived, not listed: a field the summary gains counts at once).
const stampOf = ({ last_activity_at: _, ...summary }) => JSON.stringify(summary);

// Read by `any` status: a task moves on while it is read (a rerun, a dependency unblocking it),
// and a read by the status it just left would miss it.
async function read(projectId, taskId, onChange) {
  const mine = ++reads;
  try {
    const task = await api(projectPath(projectId, `/tasks/any/${encodeURIComponent(taskId)}.md`));
    if (mine !== reads || !current || current.projectId !== projectId || current.taskId !== taskId) return;
    full = task;
    showDetails(task, projectId, taskId, onChange);
  } catch (err) {
    if (mine !== reads) return;
    if (err.status !== 404) { $("drawer-content").textContent = `Could not read the task: ${err.message}`; return; }
    // No such task (a link to one that never was): say so rather than "Loading…" for ever.
    $("drawer-title").textContent = "Task not found";
    $("drawer-content").textContent = `There is no task ${taskId} in ${projectId}.`;
  }
}

export function refreshDrawer(getTask, onChange, projectProblem) {
  if (!current) return;
  const { projectId, taskId } = current;
  const stale = $("drawer-stale");
  stale.hidden = !projectProblem;
  stale.textContent = projectProblem
    ? `This project is unavailable (${projectProblem}); what is shown may be out of date.` : "";
  lookup = getTask;
  const task = getTask(projectId, taskId);
  if (task) {
    // Started again (here or elsewhere) after its stream ended: follow the new run. A settled task
    // that moved on (rejected, approved) is read again too: the person's decision is in its transcript.
    const moved = shownStatus && shownStatus !== task.status;
    shownStatus = task.status;
    if (!stream && (OPEN.has(task.status) || moved) && !projectProblem) follow(projectId, taskId, onChange);
    // A dependency's status shows here too: its change redraws the drawer.
    const stamp = stampOf(task) + depsStamp(projectId, task);
    if (stamp !== shownStamp) {
      shownStamp = stamp;
      // The summary at once (merged over the last full read), the whole task when it is read.
      showDetails({ ...(full || {}), ...task }, projectId, taskId, onChange);
      // Read when opened, then when the task settles: a running task's changes (cost, tokens) are
      // in its summary, and a read by a status it is about to leave would miss it (404).
      if (!full || SETTLED.has(task.status)) read(projectId, taskId, onChange);
    }
  } else if (!shownStamp && !full) {
    // Not among the board's cards (a link to an old task): look for it wherever it is.
    shownStamp = "searching";
    read(projectId, taskId, onChange);
  }
  // Actions on data that may be out of date would mislead: off while the project is unavailable.
  $("drawer-actions").dataset.problem = projectProblem ? "1" : "";
  for (const button of [...$("drawer-actions").querySelectorAll("button"),
                        ...$("drawer-review").querySelectorAll(".actions button, .pr-box button, [data-role='send-revision']")]) {
    button.disabled = Boolean(projectProblem) || button.dataset.role === "cancel" && cancelling.has(`${projectId}/${taskId}`);
  }
}

function showDetails(task, projectId, taskId, onChange) {
  shownArgs = [task, projectId, taskId, onChange];
  $("drawer-title").textContent = task.title;
  $("drawer-meta").replaceChildren(meta(task, projectId));
  $("drawer-content").textContent = "content" in task ? task.content || "(none)" : "Loading…";
  const error = $("drawer-error");
  error.hidden = !task.error_message;
  error.textContent = task.error_message ? `${task.error_reason ? `${reasonText(task.error_reason)}: ` : ""}${task.error_message}` : "";
  const actions = [];
  if (task.status === "failed" || task.status === "cancelled") {
    actions.push(el("button", { type: "button", class: "primary", text: "Rerun",
                                onclick: () => act(projectId, taskId, "rerun", onChange) }));
  }
  // A plan in review has its own Reject (with the reason typed): no second way to the same end.
  if (task.status === "pending" || task.status === "blocked" || task.status === "in_progress") {
    const waiting = cancelling.has(`${projectId}/${taskId}`);
    actions.push(el("button", { type: "button", class: "danger", text: waiting ? "Cancelling…" : "Cancel",
                                disabled: waiting, dataset: { role: "cancel" },
                                onclick: () => cancelLater(projectId, taskId, task.title, onChange) }));
  }
  const problem = $("drawer-actions").dataset.problem === "1";
  for (const button of actions) if (problem) button.disabled = true;
  $("drawer-actions").replaceChildren(...actions);
  showDeps(task, projectId);
  showReview($("drawer-review"), task, full, projectId, taskId, onChange);
  showAttachments($("drawer-attachments"), projectId, taskId, task);
}

function follow(projectId, taskId, onChange) {
  if (stream) stream.close();
  const list = $("transcript");
  list.replaceChildren();
  // EventSource reconnects by itself and sends Last-Event-ID, so nothing is shown twice.
  stream = new EventSource(projectPath(projectId, `/tasks/${taskId}/stream`));
  const seen = new Set();
  const add = (message) => {
    const event = JSON.parse(message.data);
    if (seen.has(event.seq)) return;
    seen.add(event.seq);
    // Stick to the end only while the person is there: reading earlier lines is never interrupted,
    // and only the transcript's own box scrolls (the drawer's head and actions stay where they are).
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
    list.append(line(event));
    if (atEnd) list.scrollTop = list.scrollHeight;
  };
  for (const kind of KINDS) stream.addEventListener(kind, add);
  stream.addEventListener("end", () => {
    stream.close();
    stream = null;
    onChange();
  });
  stream.addEventListener("gone", (message) => {
    // The agent went away mid-stream; EventSource reconnects on its own. Say it once.
    if (!list.querySelector('[data-kind="gone"]')) {
      list.append(el("li", { class: "unparsed", dataset: { kind: "gone" }, text: JSON.parse(message.data).message }));
    }
  });
  stream.addEventListener("error", () => {
    // An error answer (task gone, agent unavailable) ends the stream for good; the board says why.
    if (stream && stream.readyState === EventSource.CLOSED) stream = null;
  });
}

export function openDrawer(projectId, taskId, getTask, onChange, projectProblem) {
  current = { projectId, taskId };
  full = null;
  shownStamp = "";
  shownStatus = "";
  $("drawer").hidden = false;
  $("drawer").scrollTop = 0;  // a drawer opens at its top: title, ×, details and actions
  $("drawer-title").textContent = "Loading…";
  $("drawer-meta").replaceChildren();
  $("drawer-actions").replaceChildren();
  resetReview();
  $("drawer-review").replaceChildren();
  $("drawer-deps").replaceChildren();
  $("drawer-deps").hidden = true;
  resetAttachments($("drawer-attachments"));
  follow(projectId, taskId, onChange);
  refreshDrawer(getTask, onChange, projectProblem);
  $("drawer-close").focus();
}

// ----- dependencies ----- why a task is blocked, what it waits for and what waits for it, each a
// link to that task. Statuses come from the board's live summaries where it holds them, else from
// the last full read (its `dependencies` and `dependents`).
function relatedIds(task) {
  return [...(task.depends_on || []), ...((full && full.dependents) || []).map((d) => d.id)];
}

function depsStamp(projectId, task) {
  return JSON.stringify(relatedIds(task).map((id) => (lookup(projectId, id) || {}).status || ""));
}

function showDeps(task, projectId) {
  const box = $("drawer-deps");
  const known = new Map([...((full && full.dependencies) || []), ...((full && full.dependents) || [])]
    .map((brief) => [brief.id, brief]));
  const row = (id) => {
    const summary = lookup(projectId, id);
    const brief = known.get(id);
    const status = (summary && summary.status) || (brief && brief.status) || "";
    const title = (summary && summary.title) || (brief && brief.title) || id;
    return el("li", { dataset: { task: id, status } },
      el("a", { href: `?task=${encodeURIComponent(projectId)}/${encodeURIComponent(id)}`,
                dataset: { role: "task-link", task: id },
                onclick: (event) => {
                  if (!opener || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
                  event.preventDefault();
                  opener(projectId, id);
                } }, title),
      el("span", { class: `dep-status status-${status || "unknown"}`, dataset: { role: "task-status" },
                   text: status ? statusText(status) : brief ? "no longer exists" : "" }));
  };
  const deps = task.depends_on || [];
  const dependents = ((full && full.dependents) || []).map((d) => d.id);
  const parts = [
    task.status === "blocked"
      ? el("p", { class: "blocked-note", dataset: { role: "blocked-reason" },
                  text: `Blocked: ${task.blocked_reason || "a dependency failed or was cancelled"}.` },
        el("span", { class: "muted", text: " It runs once that task is rerun and completes; or cancel it." }))
      : null,
    deps.length ? el("h3", { text: "Depends on" }) : null,
    deps.length ? el("ul", { class: "dep-list", dataset: { role: "dependencies" } }, ...deps.map(row)) : null,
    dependents.length ? el("h3", { text: "Needed by" }) : null,
    dependents.length ? el("ul", { class: "dep-list", dataset: { role: "dependents" } }, ...dependents.map(row)) : null,
  ].filter(Boolean);
  box.hidden = !parts.length;
  box.replaceChildren(...parts);
}
