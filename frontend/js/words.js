// What the board says in words: failure reasons, usage totals, durations. The codes stay
// available in title attributes (they are what the logs and the API carry).

import { money } from "./dom.js";

// backend/models.py ErrorReason -> a short phrase a person understands.
const REASONS = {
  agent_error: "the coding agent reported an error",
  timeout: "took longer than its time limit",
  stalled: "the agent stopped producing output",
  tests_failed: "the tests failed",
  tests_broken_on_base: "the tests already fail on the base branch",
  conflict: "conflicts with the base branch",
  push_failed: "could not push the result",
  agent_moved_refs: "the agent moved git refs it must not touch",
  approval_required: "the agent asked for an approval nobody can give",
  runtime_unavailable: "its runtime is not available",
  internal: "an internal error in Baton",
  pr_failed: "could not open its pull request",
  pr_closed: "its pull request was closed without being merged",
  template_error: "the WORKFLOW.md prompt template failed",
  hook_failed: "a WORKFLOW.md hook failed",
  max_turns: "its turns ran out while the issue was still active",
  worker_lost: "its worker machine was lost, every attempt",
};

export const reasonText = (code) => REASONS[code] || (code ? code.replaceAll("_", " ") : "");

// A pending task whose last attempt's machine went away (executor: dask): why it waits again.
export const REQUEUED_TEXT = { worker_lost: "its worker machine was lost; it was re-queued" };

// A task's status as the board's columns name it.
// blocked: pending, but a dependency failed or was cancelled (it waits for a person's rerun or cancel).
export const STATUS_LABELS = { pending: "Pending", blocked: "Blocked", plan_review: "Plan review",
                               in_progress: "In progress", review: "Review", completed: "Completed", failed: "Failed",
                               cancelled: "Cancelled" };
// The board's columns, in order (the same keys).
export const STATUSES = Object.keys(STATUS_LABELS);
export const statusText = (status) => STATUS_LABELS[status] || (status ? status.replaceAll("_", " ") : "");

// "after 1 task", "after 3 tasks": what a waiting card says of its dependencies.
export const afterText = (count) => `after ${count} task${count === 1 ? "" : "s"}`;

// Cost and tokens from `usage.hours` (UTC hour buckets) since a moment.
export function usageSince(usage, since) {
  const total = { cost: 0, tokens: 0, tasks: 0 };
  for (const bucket of (usage && usage.hours) || []) {
    if (Date.parse(bucket.hour) < since) continue;
    total.cost += bucket.cost_usd || 0;
    total.tokens += (bucket.input_tokens || 0) + (bucket.output_tokens || 0);
    total.tasks += bucket.tasks || 0;
  }
  return total;
}

// "Today" starts at local midnight; "7 days" is the last 7 × 24 hours.
export function periods(now = new Date()) {
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  return { today: midnight, week: now.getTime() - 7 * 86400_000 };
}

export function tokensText(count) {
  if (count < 1000) return `${count}`;
  if (count < 1_000_000) return `${(count / 1000).toFixed(count < 10_000 ? 1 : 0)}k`;
  return `${(count / 1_000_000).toFixed(1)}M`;
}

export const usageText = (total) => `${money(total.cost)} · ${tokensText(total.tokens)} tokens`;

// 42s, 5m 03s, 2h 07m: a running time that moves every second without being noisy.
export function span(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${String(seconds % 60).padStart(2, "0")}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ${String(minutes % 60).padStart(2, "0")}m`;
  return `${Math.floor(hours / 24)}d`;
}
