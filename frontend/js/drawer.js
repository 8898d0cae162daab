// The task drawer: details, actions and the live transcript (Server-Sent Events).

import { api, projectPath } from "./api.js";
import { el, toast } from "./dom.js";
import { costText } from "./runtimes.js";

const KINDS = ["session_started", "assistant_text", "tool_use", "tool_result", "result", "system", "unparsed",
               "baton"];
const OPEN = new Set(["pending", "in_progress", "plan_review"]);
let stream = null;
let current = null; // { projectId, taskId }

const $ = (id) => document.getElementById(id);

export function currentTask() { return current; }

export function closeDrawer() {
  if (stream) stream.close();
  stream = null;
  const closed = current;
  current = null;
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
  return el("li", { class: `${kind}${failed ? " failed" : ""}`, dataset: { seq: event.seq, kind } },
    el("span", { class: "kind", text: kind.replace("_", " ") }), text);
}

function duration(task) {
  if (!task.started_at) return "";
  const end = task.finished_at ? Date.parse(task.finished_at) : Date.now();
  const seconds = Math.round((end - Date.parse(task.started_at)) / 1000);
  return seconds < 120 ? `${seconds}s` : `${Math.round(seconds / 60)}m`;
}

function meta(task) {
  const rows = [
    ["Status", task.status], ["Type", task.task_type], ["Priority", task.priority],
    ["Runtime", `${task.runtime || "project default"}${task.agent_runtime ? ` · ran on ${task.agent_runtime}` : ""}`],
    ["Model", task.model || task.agent_model
      ? `${task.model || "runtime default"}${task.agent_model ? ` · reported ${task.agent_model}` : ""}` : ""],
    ["Cost", costText(task.cost_usd, task.cost_estimated, true)],
    ["Tokens", task.input_tokens !== null && task.input_tokens !== undefined
      ? `${task.input_tokens} in · ${task.output_tokens ?? 0} out · ${task.cache_read_tokens ?? 0} cached` : ""],
    ["Turns", task.num_turns ?? ""], ["Duration", duration(task)], ["Attempts", task.attempts],
    ["Branch", task.branch || ""], ["Commit", task.commit_sha || (task.no_changes ? "no changes" : "")],
    ["Failure", task.error_reason || ""], ["Id", task.id],
  ].filter(([, value]) => value !== "" && value !== null && value !== undefined);
  return el("dl", { class: "meta" }, ...rows.flatMap(([k, v]) => [
    el("dt", { text: k }), el("dd", { dataset: { field: k.toLowerCase() }, text: String(v) })]));
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

let shownStamp = "";

export function refreshDrawer(getTask, onChange, projectProblem) {
  if (!current) return;
  const { projectId, taskId } = current;
  const stale = $("drawer-stale");
  stale.hidden = !projectProblem;
  stale.textContent = projectProblem
    ? `This project is unavailable (${projectProblem}); what is shown may be out of date.` : "";
  const task = getTask(projectId, taskId);
  if (task) {
    // Started again (here or elsewhere) after its stream ended: follow the new run.
    if (!stream && OPEN.has(task.status) && !projectProblem) follow(projectId, taskId, onChange);
    const stamp = `${task.updated_at}|${task.status}`;
    if (stamp !== shownStamp) {
      shownStamp = stamp;
      showDetails(task, projectId, taskId, onChange);
    }
  }
  // Actions on data that may be out of date would mislead: off while the project is unavailable.
  for (const button of $("drawer-actions").querySelectorAll("button")) button.disabled = Boolean(projectProblem);
}

function showDetails(task, projectId, taskId, onChange) {
  $("drawer-title").textContent = task.title;
  $("drawer-meta").replaceChildren(meta(task));
  $("drawer-content").textContent = task.content || "(none)";
  const error = $("drawer-error");
  error.hidden = !task.error_message;
  error.textContent = task.error_message ? `${task.error_reason ? `${task.error_reason}: ` : ""}${task.error_message}` : "";
  const actions = [];
  if (task.status === "failed" || task.status === "cancelled") {
    actions.push(el("button", { type: "button", class: "primary", text: "Rerun",
                                onclick: () => act(projectId, taskId, "rerun", onChange) }));
  }
  if (task.status === "pending" || task.status === "in_progress" || task.status === "plan_review") {
    actions.push(el("button", { type: "button", class: "danger", text: "Cancel",
                                onclick: () => act(projectId, taskId, "cancel", onChange) }));
  }
  $("drawer-actions").replaceChildren(...actions);
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
    list.append(line(event));
    list.lastElementChild.scrollIntoView({ block: "nearest" });
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
  shownStamp = "";
  $("drawer").hidden = false;
  $("drawer-title").textContent = "Loading…";
  $("drawer-meta").replaceChildren();
  $("drawer-actions").replaceChildren();
  follow(projectId, taskId, onChange);
  refreshDrawer(getTask, onChange, projectProblem);
  $("drawer-close").focus();
}
