// The tail of a dashboard-started agent's log (<path>/logs/baton-agent.log), in a dialog, as text.

import { api, projectPath } from "./api.js";
import { el } from "./dom.js";

const LINES = 500;
let dialog = null;
let shown = null; // the project whose log is open

function build() {
  const title = el("h2", { dataset: { role: "agent-log-title" } });
  const body = el("pre", { class: "agent-log", dataset: { role: "agent-log-lines" }, tabindex: 0 });
  dialog = el("dialog", { class: "agent-log-dialog", "aria-label": "Agent log" },
    el("div", { class: "agent-log-body" }, title, body,
      el("div", { class: "buttons" },
        el("button", { type: "button", text: "Refresh", onclick: () => load() }),
        el("button", { type: "button", class: "primary", text: "Close", onclick: () => dialog.close() }))));
  document.body.append(dialog);
}

async function load() {
  const title = dialog.querySelector('[data-role="agent-log-title"]');
  const body = dialog.querySelector('[data-role="agent-log-lines"]');
  title.textContent = `${shown.name}: agent log (last ${LINES} lines)`;
  try {
    const data = await api(projectPath(shown.id, `/agent-log?lines=${LINES}`));
    body.textContent = data.lines.length ? data.lines.join("\n") : "(the log is empty)";
    body.scrollTop = body.scrollHeight;  // the newest lines are what one looks for
  } catch (err) {
    body.textContent = `Could not read the log: ${err.message}`;
  }
}

export function showAgentLog(project) {
  if (!dialog) build();
  shown = project;
  dialog.querySelector('[data-role="agent-log-lines"]').textContent = "Loading…";
  if (!dialog.open) dialog.showModal();
  load();
}
