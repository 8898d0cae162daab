// Runtimes on the page: the new-task form's choice, a card's badge, a cost that may be estimated.

import { el, money } from "./dom.js";

// Options for the form's Runtime select from GET /api/projects/{p}/runtimes: the project's
// default first (value "": the task names no runtime), then each configured runtime.
export function runtimeOptions(data) {
  const list = (data && Array.isArray(data.runtimes)) ? data.runtimes : [];
  return [
    el("option", { value: "", text: data && data.default ? `project default (${data.default})` : "project default" }),
    ...list.map((r) => el("option", {
      value: r.name, dataset: { available: String(Boolean(r.available)) },
      title: r.problem ? r.problem.message : undefined,
      text: `${r.name}${r.model ? ` · ${r.model}` : ""}${r.available ? "" : " (unavailable)"}`,
    })),
  ];
}

// What a card says about where its task runs: what ran it, else what it chose, else nothing.
export function runtimeBadge(task) {
  const runtime = task.agent_runtime || task.runtime;
  const model = task.agent_runtime ? (task.agent_model || task.model) : task.model;
  if (!runtime && !model) return "";
  return [runtime, model].filter(Boolean).join(" · ");
}

// A cost Baton computed from a price table (Codex reports none) is never shown as a bill.
export function costText(usd, estimated, long = false) {
  if (usd === null || usd === undefined) return "";
  if (!estimated) return money(usd);
  return long ? `≈ ${money(usd)} (estimated)` : `≈ ${money(usd)}`;
}
