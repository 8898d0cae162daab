// Issue trackers (Linear, Jira) on the board: the key of a task's issue (ABC-12) as a link to it,
// and a project's sync health with its "Sync now" button (POST …/source/sync).

import { api, projectPath } from "./api.js";
import { age, el, toast } from "./dom.js";

const KINDS = { linear: "Linear", jira: "Jira" };
export const kindName = (kind) => KINDS[kind] || String(kind || "tracker");

// Only http(s) addresses become links: the URL comes from the tracker, not from Baton.
export function safeUrl(url) {
  if (typeof url !== "string") return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch (err) {
    return null;
  }
}

// The issue's key, a link to the issue when its URL is one (else plain text). `props` adds
// attributes (the card's copy takes no Tab stop: the drawer's does).
export function issueLink(source, props = {}) {
  const href = safeUrl(source.url);
  const common = { class: "issue-key", dataset: { role: "issue-key", kind: source.kind }, text: source.identifier };
  if (!href) return el("span", { ...common, title: `${source.identifier} in ${kindName(source.kind)}` });
  return el("a", { ...common, ...props, href, target: "_blank", rel: "noopener noreferrer",
                   title: `${source.identifier} in ${kindName(source.kind)} (opens in a new tab)` });
}

// ----- a project's source: one row per project, kept across redraws (a focused "Sync now" keeps
// its focus, a request under way keeps its button disabled, and the live status is not rebuilt).
// The line says it is the tracker SYNC's state ("Linear sync: error — …"), not the project's: the
// project's badge beside it is about its baton-agent. A project whose agent runs a WORKFLOW.md
// (source.origin "workflow") says so first ("WORKFLOW.md · Linear sync: ok"), and an edit of that
// file the agent refused (it keeps the last good one) as a warning under the line.

const rows = new Map();  // project id -> { node, status, when, button, warning, sync, source, name }

export function sourceRow(project) {
  if (!project.source) {
    rows.delete(project.id);
    return null;
  }
  let row = rows.get(project.id);
  if (!row) {
    // Only the state's words are a live region: announced when they change (syncing, synced, an
    // error), not the clock beside them that ticks every second.
    const status = el("span", { class: "source-status", dataset: { role: "source-status" }, "aria-live": "polite" });
    const when = el("span", { class: "source-when", dataset: { role: "source-when" } });
    const file = el("span", { class: "source-file", dataset: { role: "source-file" }, hidden: true });
    const text = el("span", { class: "source-text", dataset: { role: "source-text" } }, file, status, when);
    const button = el("button", { type: "button", class: "source-sync", dataset: { role: "sync-now" }, text: "Sync now" });
    const warning = el("p", { class: "source-warning", dataset: { role: "source-warning" }, hidden: true });
    const invalid = el("p", { class: "workflow-warning", dataset: { role: "workflow-warning" }, hidden: true });
    row = { node: el("div", { class: "project-source", dataset: { role: "source" } }, text, button, warning, invalid),
            file, status, when, button, warning, invalid, sync: null };
    button.addEventListener("click", () => syncNow(project.id, row));
    rows.set(project.id, row);
  }
  row.source = project.source;
  row.name = project.name;
  drawRow(row);
  return row.node;
}

// What tells that a sync ended since "Sync now" was pressed: a success moves last_sync_at, a
// failure moves next_sync_at (the retry) or the error count.
const syncStamp = (source) => JSON.stringify([source.last_sync_at, source.next_sync_at, source.errors, source.state]);

// "14:05:09", the browser's local time.
function clockTime(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "";
  return [at.getHours(), at.getMinutes(), at.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

// "14:02", the browser's local time.
function hourMinute(iso) {
  return clockTime(iso).slice(0, 5);
}

// The workflow file's name (WORKFLOW.md, or what --workflow named), for a source an agent runs from one.
function workflowFile(source) {
  if (source.origin !== "workflow") return "";
  const path = source.workflow && typeof source.workflow.path === "string" ? source.workflow.path : "";
  return path.split("/").filter(Boolean).pop() || "WORKFLOW.md";
}

const MESSAGE_SHOWN = 300;  // characters of a refused edit's message on the board (all of it in the title)

// The refused edit, or "" when the file in force is the one on disk. The message is the
// repository's text: only ever textContent and a title.
function invalidEdit(source, file) {
  const workflow = source.origin === "workflow" ? source.workflow || {} : {};
  if (workflow.state !== "invalid") return { text: "", title: "" };
  const message = String((workflow.error && workflow.error.message) || "no reason given");
  const flat = message.split("\n").map((line) => line.trim()).filter(Boolean).join("; ");
  const shown = flat.length > MESSAGE_SHOWN ? `${flat.slice(0, MESSAGE_SHOWN - 1)}…` : flat;
  const loaded = workflow.loaded_at ? hourMinute(workflow.loaded_at) : "";
  const running = loaded ? `running the version loaded at ${loaded}` : "running the version loaded before";
  return { text: `${file}: invalid edit ignored — ${running} (${shown})`, title: message };
}

function drawRow(row) {
  const source = row.source;
  const kind = kindName(source.kind);
  const file = workflowFile(source);
  const trackerless = source.state === "none";  // a WORKFLOW.md without a tracker: nothing to sync
  const sync = row.sync;
  if (sync && !sync.ended && syncStamp(source) !== sync.stamp) sync.ended = true;
  if (sync && sync.ended && !sync.requesting) row.sync = null;
  const syncing = Boolean(row.sync);
  const state = source.state === "error" || source.healthy === false ? "error"
    : source.last_sync_at ? "ok" : "starting";
  // The name starts with the visible words (axe label-content-name-mismatch), then says which.
  row.button.setAttribute("aria-label", `Sync now: read ${kind} for ${row.name}`);
  const edit = invalidEdit(source, file);
  const said = JSON.stringify([state, syncing, kind, source.reason, source.last_sync_at, source.next_sync_at, source.warning,
                               file, trackerless, edit, source.workflow && source.workflow.path]);
  if (row.said === said) return;
  row.said = said;
  row.node.dataset.state = trackerless ? "none" : state;
  row.node.dataset.origin = source.origin === "workflow" ? "workflow" : "config";
  if (file) row.node.dataset.workflow = source.workflow && source.workflow.state === "invalid" ? "invalid" : "ok";
  else delete row.node.dataset.workflow;
  row.file.hidden = !file;
  row.file.textContent = file ? `${file} · ` : "";
  row.file.title = file ? (source.workflow && source.workflow.path) || "" : "";
  row.button.hidden = trackerless;
  row.node.dataset.syncing = syncing ? "true" : "false";
  row.node.title = source.reason || "";
  let status;
  let when = [];
  if (trackerless) {
    status = "no tracker";
  } else if (syncing) {
    status = `${kind} sync: syncing…`;
  } else if (state === "error") {
    status = `${kind} sync: error — ${source.reason || "the last sync failed"}`;
    // When it tries again (a rate limit's reason may say so already).
    const retry = source.next_sync_at && !/retrying at/i.test(source.reason || "") ? clockTime(source.next_sync_at) : "";
    if (retry) when = [" · ", el("span", { dataset: { role: "source-retry" }, title: source.next_sync_at, text: `retrying at ${retry}` })];
  } else if (state === "ok") {
    status = `${kind} sync: ok`;
    // Ticks with the cards' clocks (board.js tick()): "synced 20s ago".
    when = [" · synced ", el("span", { dataset: { tick: "age", since: source.last_sync_at, prefix: "", suffix: " ago" },
                                       title: source.last_sync_at, text: `${age(source.last_sync_at)} ago` })];
  } else {
    status = `${kind} sync: first sync…`;
  }
  if (row.status.textContent !== status) row.status.textContent = status;
  row.when.replaceChildren(...when);
  // A problem the sync got past, still worth knowing (e.g. an issue it could not move): muted.
  const warning = typeof source.warning === "string" && source.warning ? source.warning : "";
  row.warning.hidden = !warning;
  row.warning.textContent = warning ? `warning: ${warning}` : "";
  row.invalid.hidden = !edit.text;
  row.invalid.textContent = edit.text;
  row.invalid.title = edit.title;
}

const SYNCING_MAX_MS = 60_000;

async function syncNow(projectId, row) {
  if (row.busy) return;
  // aria-disabled rather than disabled: a disabled button would drop the keyboard focus.
  row.busy = true;
  row.button.setAttribute("aria-disabled", "true");
  // "Syncing…" until the health shows the sync ended (the request only starts it).
  row.sync = { stamp: syncStamp(row.source), requesting: true, ended: false };
  drawRow(row);
  try {
    await api(projectPath(projectId, "/source/sync"), { method: "POST" });
    // What the sync found comes with the board's stream (new cards, the health above).
    if (row.sync) {
      const sync = row.sync;
      sync.requesting = false;
      // Never "Syncing…" for good: a stream that went quiet must not leave it there.
      setTimeout(() => { if (row.sync === sync) { row.sync = null; drawRow(row); } }, SYNCING_MAX_MS);
    }
  } catch (err) {
    row.sync = null;
    toast(`Could not sync now: ${err.message}`);
  } finally {
    row.busy = false;
    row.button.removeAttribute("aria-disabled");
    drawRow(row);
  }
}
