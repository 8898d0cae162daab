// A person in the loop, in the drawer (issue #11): the plan of a task in plan review (approve,
// revise, reject), the diff of a task in review with comments on lines (approve, request
// changes, reject), a task's pull request, and a follow-up message box. What a person types is
// kept while the task changes under it: the panel is rebuilt only when what it is about changes
// (another task, status, commit under review, plan).

import { api, projectPath } from "./api.js";
import { renderDiff } from "./diffview.js";
import { el, toast } from "./dom.js";

// In review the review box is where a person talks to the agent (its message goes with the comments).
const FOLLOW_UP = new Set(["pending", "in_progress", "completed", "failed", "cancelled"]);
const CHECK_WORDS = { none: "no checks", pending: "checks running", success: "checks passed", failure: "checks failed" };

let state = null; // { key, stamp, comments, diffOpen, nodes... } for the task shown
// What a person typed, per task, kept when the drawer closes or shows another task (the last 50):
// { changes, revise, follow: text; sha: the commit `comments` are about; comments }.
const drafts = new Map();

function draftOf(key) {
  let draft = drafts.get(key);
  if (!draft) {
    draft = { changes: "", revise: "", follow: "", sha: null, comments: [] };
    drafts.set(key, draft);
    if (drafts.size > 50) drafts.delete(drafts.keys().next().value);
  }
  return draft;
}

// A textarea whose text is the draft's `field`.
function drafted(draft, field, props) {
  const box = el("textarea", props);
  box.value = draft[field];
  box.addEventListener("input", () => { draft[field] = box.value; });
  return box;
}

function clear(box, draft, field) {
  box.value = "";
  draft[field] = "";
}

export function resetReview() { state = null; }

const post = (projectId, taskId, action, body) =>
  api(projectPath(projectId, `/tasks/${encodeURIComponent(taskId)}/${action}`), { method: "POST", body });

// task: the summary merged over the full task; full: the full task as read (null until read).
export function showReview(box, task, read, projectId, taskId, onChange) {
  // A full read from before the task moved on (its summary is newer) tells nothing of now: nor
  // does one from an earlier run in the same status (review → changes → review, a revised plan):
  // its plan or commit is not the one waiting, and Approve would approve what nobody saw.
  const full = read && read.status === task.status && (read.runs ?? null) === (task.runs ?? null) ? read : null;
  const key = `${projectId}/${taskId}`;
  if (!state || state.key !== key) {
    state = { key, stamp: null, comments: [], diffOpen: false, follow: null, diff: null, draft: draftOf(key) };
  }
  const reviewSha = full ? full.review_sha || "" : "";
  const stamp = JSON.stringify([task.status, reviewSha, full ? full.plan || "" : "", Boolean(full),
                                full ? Boolean(full.branch || full.commit_sha || full.review_sha) : false]);
  const ctx = { box, task, full, projectId, taskId, onChange };
  if (stamp !== state.stamp) {
    // Comments are about one commit: a new one under review starts without them.
    if (reviewSha && state.draft.sha !== reviewSha) Object.assign(state.draft, { sha: reviewSha, comments: [] });
    state.comments = state.draft.comments;
    state.stamp = stamp;
    state.sections = { plan: plan(ctx), review: review(ctx), diff: diffSection(ctx), follow: followUp(ctx) };
  }
  state.sections.pr = prSection(ctx);
  const focused = document.activeElement;
  const order = ["plan", "pr", "review", "diff", "follow"].map((name) => state.sections[name]).filter(Boolean);
  // Only what changed is swapped: a section moved (even to where it was) loses the focus, and a
  // person typing a comment in the diff while the PR's checks change would lose their place.
  const keep = new Set(order);
  for (const child of [...box.children]) if (!keep.has(child)) child.remove();
  order.forEach((node, i) => { if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null); });
  // The PR part is drawn again with every change: its Refresh button keeps the focus.
  if (focused && !focused.isConnected && focused.dataset.role) {
    box.querySelector(`[data-role="${focused.dataset.role}"]`)?.focus();
  }
}

// ----- plan review -----------------------------------------------------------------------

function plan({ task, full, projectId, taskId, onChange }) {
  const text = full && full.plan;
  if (task.status !== "plan_review") {
    if (!text) return null;
    return el("details", { class: "plan-box", dataset: { role: "plan" } },
      el("summary", { text: full.plan_approved ? "Plan (approved)" : "Plan" }), el("pre", { class: "plan", text }));
  }
  if (!full) return el("p", { class: "muted", text: "Loading the plan…" });
  const draft = state.draft;  // this task's, even if another task is shown when the answer comes
  const revision = drafted(draft, "revise", { rows: 4, "aria-label": "What to change in the plan",
                                                   placeholder: "What to change in the plan", dataset: { role: "revise-text" } });
  const reviseBox = el("div", { class: "revise-box", hidden: !revision.value }, revision,
    el("div", { class: "buttons" },
      el("button", { type: "button", class: "primary", text: "Send revision", dataset: { role: "send-revision" },
                     onclick: async () => {
                       if (!revision.value.trim()) { revision.focus(); return; }
                       if (await done(() => post(projectId, taskId, "request-changes", { text: revision.value }),
                                      "Revision sent: the agent plans again", onChange)) clear(revision, draft, "revise");
                     } })));
  return el("section", { class: "plan-box", "aria-label": "Plan", dataset: { role: "plan" } },
    el("h3", { text: "Plan" }),
    text ? el("pre", { class: "plan", tabindex: 0, "aria-label": "The agent's plan", text })
      : el("p", { class: "muted", text: "The agent gave no plan." }),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "primary", text: "Approve plan", dataset: { role: "approve-plan" },
                     onclick: () => done(() => post(projectId, taskId, "approve", { sha: null }),
                                         "Plan approved: the agent starts the work", onChange) }),
      el("button", { type: "button", text: "Revise", "aria-expanded": "false", dataset: { role: "revise" },
                     onclick: (event) => {
                       reviseBox.hidden = !reviseBox.hidden;
                       event.currentTarget.setAttribute("aria-expanded", String(!reviseBox.hidden));
                       if (!reviseBox.hidden) revision.focus();
                     } }),
      rejectButton(projectId, taskId, onChange, "revise")),
    reviseBox);
}

// ----- review: approve / request changes / reject, with the diff ---------------------------

function review({ task, full, projectId, taskId, onChange }) {
  if (task.status !== "review" || !full) return null;
  const sha = full.review_sha || null;
  const mine = state;  // this task's, even if another task is shown when the answer comes
  const message = drafted(mine.draft, "changes", { rows: 3, "aria-label": "Message with the changes you request",
                                                    placeholder: "What to change (with or without comments on lines below)",
                                                    dataset: { role: "changes-text" } });
  const changes = el("button", { type: "button", text: "Request changes", dataset: { role: "request-changes" },
    onclick: async () => {
      const body = { text: message.value, comments: [...state.comments] };
      if (!body.text.trim() && !body.comments.length) {
        toast("Write what to change, or comment on lines of the diff");
        message.focus();
        return;
      }
      if (await done(() => post(projectId, taskId, "request-changes", body),
                     "Changes requested: the agent takes another turn", onChange)) {
        clear(message, mine.draft, "changes");
        mine.comments.length = 0;
      }
    } });
  const count = el("span", { class: "muted", dataset: { role: "comment-count" } });
  const section = el("section", { class: "review-box", "aria-label": "Review", dataset: { role: "review", sha: sha || "" } },
    el("h3", { text: task.pr ? "Pull request under review" : "Waiting for your review" }),
    sha ? el("p", { class: "muted", text: task.pr ? `Tested commit ${sha.slice(0, 12)}: it lands when its pull `
      + "request is merged on GitHub." : `Tested commit ${sha.slice(0, 12)}${full.review_base
      ? ` on ${full.review_base.slice(0, 12)}` : ""}: approving lands exactly this.` }) : null,
    message,
    el("div", { class: "actions" },
      // A pull request lands by being merged on GitHub: there is nothing to approve here.
      task.pr ? null : el("button", { type: "button", class: "primary", text: "Approve", dataset: { role: "approve" },
        onclick: () => done(() => post(projectId, taskId, "approve", { sha }), "Approved: it lands once tested", onChange) }),
      changes, rejectButton(projectId, taskId, onChange, "changes"), count));
  section.updateCount = () => {
    const n = state.comments.length;
    count.textContent = n ? `${n} comment${n === 1 ? "" : "s"} on lines` : "";
  };
  section.updateCount();
  return section;
}

// Reject cancels the task (and closes its pull request): a second click within 5 s confirms it.
// What the person typed in the panel's box goes with it as the reason.
function rejectButton(projectId, taskId, onChange, field) {
  let armed = null;
  const disarm = () => { clearTimeout(armed); armed = null; button.textContent = "Reject"; };
  const button = el("button", { type: "button", class: "danger", text: "Reject", dataset: { role: "reject" },
    onclick: () => {
      if (!armed) {
        button.textContent = "Reject: click again";
        armed = setTimeout(disarm, 5000);
        return;
      }
      disarm();
      const reason = state.draft[field].trim() || null;
      done(() => post(projectId, taskId, "reject", { reason }), "Rejected: cancelled, its branch kept", onChange);
    } });
  return button;
}

// The diff: shown at once for a task in review, behind a toggle for others that have a branch.
function diffSection({ task, full, projectId, taskId }) {
  if (!full) return null;
  const inReview = task.status === "review";
  const hasWork = Boolean(full.branch || full.commit_sha || full.review_sha);
  if (!inReview && (!hasWork || task.status === "plan_review")) return null;
  const holder = el("div", { class: "diff-holder", dataset: { role: "diff-holder" } });
  const load = async () => {
    holder.replaceChildren(el("p", { class: "muted", text: "Loading the diff…" }));
    try {
      const diff = await api(projectPath(projectId, `/tasks/${encodeURIComponent(taskId)}/diff`));
      const comments = inReview ? {
        comments: state.comments,
        onChange: () => state.sections.review && state.sections.review.updateCount(),
      } : null;
      holder.replaceChildren(renderDiff(diff, comments));
    } catch (err) {
      holder.replaceChildren(el("p", { class: "muted", dataset: { role: "no-diff" },
        text: err.code === "no_diff" ? "No diff to show: the task has no branch (any more)."
          : `Could not read the diff: ${err.message}` }));
    }
  };
  if (inReview) {
    load();
    return el("div", { class: "diff-wrap" }, el("h3", { text: "Diff" }), holder);
  }
  const toggle = el("button", { type: "button", text: "Diff", "aria-expanded": "false", dataset: { role: "diff-toggle" },
    onclick: () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      holder.hidden = !open;
      if (open && !holder.children.length) load();
    } });
  holder.hidden = true;
  return el("div", { class: "diff-wrap" }, toggle, holder);
}

// ----- the pull request ------------------------------------------------------------------

function prSection({ task, full, projectId, taskId, onChange }) {
  const pr = full && full.pr && task.pr && full.pr.number === task.pr.number ? { ...full.pr, ...task.pr,
    checks: full.pr.checks } : full && full.pr ? full.pr : task.pr;
  if (!pr) return null;
  const checks = pr.checks && typeof pr.checks === "object" ? pr.checks : { state: pr.checks || "none" };
  const safeUrl = typeof pr.url === "string" && /^https?:\/\//i.test(pr.url) ? pr.url : null;
  const title = `Pull request #${pr.number}`;
  const figures = checks.total ? ` (${checks.passed || 0} of ${checks.total} passed${checks.failed
    ? `, ${checks.failed} failed` : ""}${checks.pending ? `, ${checks.pending} running` : ""})` : "";
  return el("section", { class: "pr-box", "aria-label": "Pull request", dataset: { role: "pr", state: pr.state } },
    safeUrl ? el("a", { href: safeUrl, target: "_blank", rel: "noopener noreferrer", text: title, dataset: { role: "pr-link" } })
      : el("strong", { text: title }),
    el("span", { dataset: { role: "pr-state" }, text: `${pr.state}${pr.draft ? " · draft" : ""}` }),
    el("span", { dataset: { role: "pr-checks" }, text: `${CHECK_WORDS[checks.state] || checks.state}${figures}` }),
    pr.mergeable_state ? el("span", { class: "muted", text: pr.mergeable_state }) : null,
    task.status === "review" ? el("button", { type: "button", text: "Refresh", dataset: { role: "pr-refresh" },
      title: "read the pull request from GitHub now",
      onclick: () => done(() => post(projectId, taskId, "pr/refresh"), "Pull request read again", onChange) }) : null);
}

// ----- follow-up messages ----------------------------------------------------------------

function followUp({ task, projectId, taskId, onChange }) {
  if (!FOLLOW_UP.has(task.status)) return null;
  // One box per task, kept across redraws: what is being typed survives the task moving on.
  if (!state.follow) {
    const draft = state.draft;  // this task's, even if another task is shown when the answer comes
    const text = drafted(draft, "follow", { rows: 2, id: "followup-text", dataset: { role: "followup-text" } });
    const send = el("button", { type: "button", class: "primary", text: "Send", dataset: { role: "followup-send" },
      onclick: async () => {
        if (!text.value.trim()) { text.focus(); return; }
        const answer = await done(() => post(projectId, taskId, "messages", { text: text.value }), null, onChange);
        if (!answer) return;
        clear(text, draft, "follow");
        toast(answer.delivery === "queued" ? "Message queued for its next turn" : "Message sent: started a new turn");
      } });
    const hintNode = el("span", { class: "muted", dataset: { role: "followup-hint" } });
    state.follow = el("section", { class: "followup", "aria-label": "Message the agent", dataset: { role: "followup" } },
      el("label", { for: "followup-text", text: "Message the agent" }), text,
      el("div", { class: "actions" }, send, hintNode));
    state.follow.hint = hintNode;
  }
  state.follow.hint.textContent = task.status === "in_progress" || task.status === "pending"
    ? "it reads it at its next turn" : task.status === "completed"
      ? "starts a new run from the current base branch, with the task's earlier context"
      : "starts a new turn in the same session";
  return state.follow;
}

// An action's request: a toast with the answer (or the error); true-ish (the answer) when it went.
// One at a time: a double click, or Approve then Reject before the answer, sends nothing more (a
// second message would be queued twice; a second decision only fails).
async function done(send, said, onChange) {
  const mine = state;
  if (!mine || mine.busy) return null;
  mine.busy = true;
  try {
    const answer = await send();
    if (said) toast(said);
    onChange();
    return answer || true;
  } catch (err) {
    toast(err.code === "stale_review" ? "A newer version waits for review: look at it again"
      : `Could not do that: ${err.message}`);
    onChange();
    return null;
  } finally {
    mine.busy = false;
  }
}
