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
// its focus, and a request under way keeps its button disabled).

const rows = new Map();  // project id -> { node, text, button, busy }

export function sourceRow(project) {
  if (!project.source) {
    rows.delete(project.id);
    return null;
  }
  let row = rows.get(project.id);
  if (!row) {
    const text = el("span", { class: "source-text", dataset: { role: "source-text" } });
    const button = el("button", { type: "button", class: "source-sync", dataset: { role: "sync-now" }, text: "Sync now" });
    row = { node: el("div", { class: "project-source", dataset: { role: "source" } }, text, button), text, button, busy: false };
    button.addEventListener("click", () => syncNow(project.id, row));
    rows.set(project.id, row);
  }
  drawRow(row, project);
  return row.node;
}

function drawRow(row, project) {
  const source = project.source;
  const kind = kindName(source.kind);
  const state = source.state === "error" || source.healthy === false ? "error"
    : source.last_sync_at ? "ok" : "starting";
  const said = JSON.stringify([state, kind, source.reason, source.last_sync_at]);
  // The name starts with the visible words (axe label-content-name-mismatch), then says which.
  row.button.setAttribute("aria-label", `Sync now: read ${kind} for ${project.name}`);
  if (row.said === said) return;
  row.said = said;
  row.node.dataset.state = state;
  row.node.title = source.reason || "";
  if (state === "error") {
    row.text.replaceChildren(`${kind} · error: ${source.reason || "the last sync failed"}`);
  } else if (state === "ok") {
    // Ticks with the cards' clocks (board.js tick()): "synced 20s ago".
    row.text.replaceChildren(`${kind} · synced `,
      el("span", { dataset: { tick: "age", since: source.last_sync_at, prefix: "", suffix: " ago" },
                   text: `${age(source.last_sync_at)} ago` }));
  } else {
    row.text.replaceChildren(`${kind} · first sync…`);
  }
}

async function syncNow(projectId, row) {
  if (row.busy) return;
  // aria-disabled rather than disabled: a disabled button would drop the keyboard focus.
  row.busy = true;
  row.button.setAttribute("aria-disabled", "true");
  try {
    await api(projectPath(projectId, "/source/sync"), { method: "POST" });
    // What the sync found comes with the board's stream (new cards, the health above).
  } catch (err) {
    toast(`Could not sync now: ${err.message}`);
  } finally {
    row.busy = false;
    row.button.removeAttribute("aria-disabled");
  }
}
