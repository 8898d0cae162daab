// Plans of a project (a view of js/workspace.js): the list by state with the files that are not
// valid plans, and the plan editor: title, summary, tasks (ref, title, type, priority,
// description, the tasks it runs after), add and remove tasks, the order they run in, Save (with
// the revision it was made on), Approve, Back to draft, Run, Delete. A plan that runs shows each
// task's status as the board's change stream reports it, each a link to the task's drawer.

import { api, projectPath } from "./api.js";
import { el, toast } from "./dom.js";
import { findSummary, live } from "./live.js";
import { setItem, showView } from "./workspace.js";
import { statusText } from "./words.js";

const STATES = [["draft", "Draft"], ["ready", "Ready"], ["executing", "Running"], ["done", "Done"], ["failed", "Failed"]];
const STATE_TEXT = Object.fromEntries(STATES);
const TASK_TYPES = ["feature", "bugfix", "refactor", "chore", "docs", "test"];
const PRIORITIES = ["low", "medium", "high", "urgent"];
const RUN = new Set(["executing", "done", "failed"]);
const ENDED = new Set(["completed", "failed", "cancelled"]);

let hooks = { openTask: () => {} };
let projectId = null;
let planId = null;
let nodes = null;  // the view's root and parts
let plan = null;  // the plan shown, as last read (with task_status)
let edit = null;  // a draft's editable copy: { title, summary, tasks: [{ uid, ref, …, deps: Set of uids }] }
let dirty = false;
let reads = 0;
let uids = 0;
let boardStamp = "";  // what the board's summaries said of this view's tasks when last looked
let refetch = { timer: null, tries: 0 };

export function setupPlans(handlers) { hooks = { ...hooks, ...handlers }; }

const plansPath = (rest = "") => projectPath(projectId, `/plans${rest}`);
const planPath = (rest = "") => plansPath(`/${encodeURIComponent(planId)}${rest}`);

export const plansView = {
  show(body, project, itemId) {
    projectId = project;
    nodes = { root: el("div", { class: "plans" }) };
    body.replaceChildren(nodes.root);
    if (itemId) openPlan(itemId);
    else openList();
  },
  leave() {
    clearTimeout(refetch.timer);
    projectId = null;
    planId = null;
    plan = null;
    edit = null;
    nodes = null;
  },
};

// ----- the list ------------------------------------------------------------------------------

async function openList() {
  planId = null;
  plan = null;
  edit = null;
  setItem(null);
  boardStamp = stampOfBoard();
  nodes.root.replaceChildren(el("p", { class: "muted", text: "Loading the plans…" }));
  await readList();
}

async function readList() {
  const mine = ++reads;
  const project = projectId;
  let data;
  try {
    data = await api(plansPath());
  } catch (err) {
    if (mine !== reads || project !== projectId || planId || !nodes) return;
    nodes.root.replaceChildren(el("p", { class: "error-text", dataset: { role: "plans-error" },
                                         text: `Could not read the plans: ${err.message}` }));
    return;
  }
  if (mine !== reads || project !== projectId || planId || !nodes) return;
  drawList(data);
}

function progressText(progress) {
  if (!progress) return "";
  return Object.entries(progress).filter(([, n]) => n).map(([status, n]) => `${n} ${statusText(status).toLowerCase()}`)
    .join(", ");
}

function drawList(data) {
  const plans = data.plans || [];
  const sections = STATES.map(([state, label]) => {
    const mine = plans.filter((p) => p.state === state);
    if (!mine.length) return null;
    return el("section", { class: "plans-state", "aria-label": `${label} plans`, dataset: { state } },
      el("h4", { text: `${label} (${mine.length})` }),
      el("ul", { class: "plan-items" }, ...mine.map((p) => el("li", {},
        el("button", { type: "button", class: "plan-item", dataset: { plan: p.id, state: p.state },
                       onclick: () => openPlan(p.id) },
          el("span", { class: "plan-item-title", text: p.title }),
          el("span", { class: "plan-item-meta", text: [`${p.tasks} task${p.tasks === 1 ? "" : "s"}`, `revision ${p.revision}`,
                                                         progressText(p.progress)].filter(Boolean).join(" · ") }))))));
  }).filter(Boolean);
  const invalid = data.invalid || [];
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.plan : null;
  nodes.root.replaceChildren(...[  // (replaceChildren would write a null as the text "null")
    el("div", { class: "plans-head" }, el("h3", { text: "Plans" }),
      el("span", { class: "muted", text: "A plan comes from a conversation: Chat, then “Make a plan”." })),
    ...(sections.length ? sections : [el("p", { class: "muted", dataset: { role: "no-plans" }, text: "No plans yet." })]),
    invalid.length ? el("section", { class: "plans-invalid", "aria-label": "Files that are not valid plans",
                                     dataset: { role: "invalid-plans" } },
      el("h4", { text: "Files that are not valid plans" }),
      el("ul", {}, ...invalid.map((bad) => el("li", {}, el("code", { text: bad.file }), ": ", bad.problem)))) : null,
  ].filter(Boolean));
  keepFocus(focused ? `.plan-item[data-plan="${CSS.escape(focused)}"]` : ".plan-item");
}

// ----- one plan ------------------------------------------------------------------------------

async function openPlan(id) {
  planId = id;
  plan = null;
  edit = null;
  dirty = false;
  refetch.tries = 0;
  setItem(id);
  nodes.root.replaceChildren(el("p", { class: "muted", text: "Loading the plan…" }));
  await readPlan();
}

async function readPlan() {
  const mine = ++reads;
  const project = projectId;
  const id = planId;
  let data;
  try {
    data = await api(planPath());
  } catch (err) {
    if (mine !== reads || project !== projectId || id !== planId || !nodes) return;
    if (!plan) {
      nodes.root.replaceChildren(backButton(), el("p", { class: "error-text", dataset: { role: "plan-error" },
                                                         text: `Could not read the plan: ${err.message}` }));
    } else {
      showError(`Could not read the plan again: ${err.message}`);
    }
    return;
  }
  if (mine !== reads || project !== projectId || id !== planId || !nodes) return;
  const same = plan && nodes.editor && plan.state !== "draft" && plan.state === data.state && plan.revision === data.revision;
  plan = data;
  boardStamp = stampOfBoard();
  if (same) {  // only its tasks moved on: drawn in place (a focused link keeps its focus)
    drawStatuses();
    followUp();
    return;
  }
  edit = data.state === "draft" ? editable(data) : null;
  dirty = false;
  draw();
  followUp();
}

function editable(source) {
  return {
    title: source.title,
    summary: source.summary || "",
    tasks: (() => {
      const byRef = new Map();
      const tasks = source.tasks.map(({ ref, title, content, task_type: type, priority, needs_plan_review: review,
                                        depends_on: deps, ...extra }) => {
        const task = { uid: ++uids, ref, title, content: content || "", task_type: type || "feature",
                       priority: priority || "medium", needs_plan_review: Boolean(review), refs: deps || [], extra };
        byRef.set(ref, task.uid);
        return task;
      });
      for (const task of tasks) {
        task.deps = new Set(task.refs.map((ref) => byRef.get(ref)).filter(Boolean));
        delete task.refs;
      }
      return tasks;
    })(),
  };
}

// The PlanDraft the editor holds.
function draftOf() {
  const refOf = new Map(edit.tasks.map((t) => [t.uid, t.ref.trim()]));
  return {
    title: edit.title,
    summary: edit.summary,
    tasks: edit.tasks.map((t) => ({
      ...t.extra, ref: t.ref.trim(), title: t.title, content: t.content, task_type: t.task_type,
      priority: t.priority, needs_plan_review: t.needs_plan_review,
      depends_on: [...t.deps].map((uid) => refOf.get(uid)).filter((ref) => ref !== undefined),
    })),
  };
}

function backButton() {
  return el("button", { type: "button", class: "plan-back", text: "‹ Plans", onclick: openList });
}

function draw() {
  const editing = plan.state === "draft";
  nodes.error = el("p", { class: "error-text", role: "alert", dataset: { role: "plan-error" }, hidden: true });
  nodes.graph = el("section", { class: "plan-graph", "aria-label": "Order of the tasks", dataset: { role: "plan-order" } });
  nodes.tasks = el("ol", { class: "plan-tasks" });
  nodes.actions = el("div", { class: "plan-actions" });
  const head = el("div", { class: "plan-head" },
    backButton(),
    el("span", { class: `plan-state state-${plan.state}`, dataset: { role: "plan-state" }, text: STATE_TEXT[plan.state] || plan.state }),
    el("span", { class: "muted", dataset: { role: "plan-revision" }, text: `revision ${plan.revision}` }),
    plan.chat_id ? el("button", { type: "button", class: "link-button", text: "its conversation",
                                  onclick: () => showView("chat", projectId, plan.chat_id) }) : null);
  const parts = [head];
  if (editing) {
    const title = el("input", { maxlength: 200, required: true, autocomplete: "off", dataset: { role: "plan-title" } });
    title.value = edit.title;
    title.addEventListener("input", () => { edit.title = title.value; changed(); });
    const summary = el("textarea", { rows: 3, dataset: { role: "plan-summary" } });
    summary.value = edit.summary;
    summary.addEventListener("input", () => { edit.summary = summary.value; changed(); });
    parts.push(el("label", { class: "field" }, "Title", title), el("label", { class: "field" }, "Summary", summary));
  } else {
    parts.push(el("h3", { class: "plan-title", dataset: { role: "plan-title" }, text: plan.title }));
    if (plan.summary) parts.push(el("p", { class: "plan-summary", text: plan.summary }));
  }
  if (plan.reason) parts.push(el("p", { class: "error-text", dataset: { role: "plan-reason" }, text: plan.reason }));
  parts.push(el("h4", { class: "plan-tasks-head", text: "Tasks" }), nodes.tasks);
  if (editing) {
    parts.push(el("button", { type: "button", text: "Add task", dataset: { role: "add-task" }, onclick: addTask }));
  }
  parts.push(nodes.graph, nodes.error, nodes.actions);
  nodes.editor = el("div", { class: "plan-editor", dataset: { plan: plan.id, state: plan.state, revision: plan.revision } },
    ...parts);
  nodes.root.replaceChildren(nodes.editor);
  drawTasks();
  drawGraph();
  drawActions();
  keepFocus(".plan-back");
}

// What had the focus was drawn again (a plan chosen in the list, a plan saved): it goes to `selector`.
function keepFocus(selector) {
  const focused = document.activeElement;
  if (!focused || focused === document.body) nodes.root.querySelector(selector)?.focus();
}

function changed() {
  dirty = true;
  if (nodes.editor) nodes.editor.dataset.dirty = "1";
  drawActions();
}

function select(options, value, onchange) {
  const node = el("select", { onchange: () => onchange(node.value) },
    ...options.map((o) => el("option", { value: o, text: o })));
  node.value = value;
  return node;
}

function drawTasks() {
  if (plan.state !== "draft") {
    nodes.tasks.replaceChildren(...plan.tasks.map(runTask));
    return;
  }
  nodes.tasks.replaceChildren(...edit.tasks.map(taskCard));
}

// A task of a draft: every field editable; the tasks it runs after behind a summary that names them.
function taskCard(task) {
  const name = () => task.ref.trim() || "(no ref)";
  const ref = el("input", { class: "plan-ref", maxlength: 64, autocomplete: "off", spellcheck: "false",
                            dataset: { role: "task-ref" } });
  ref.value = task.ref;
  ref.addEventListener("input", () => { task.ref = ref.value; changed(); refreshDeps(); drawGraph(); });
  const title = el("input", { maxlength: 200, autocomplete: "off", dataset: { role: "task-title" } });
  title.value = task.title;
  title.addEventListener("input", () => { task.title = title.value; changed(); });
  const content = el("textarea", { rows: 3, dataset: { role: "task-content" } });
  content.value = task.content;
  content.addEventListener("input", () => { task.content = content.value; changed(); });
  const review = el("input", { type: "checkbox", dataset: { role: "task-plan-review" },
                               onchange: () => { task.needs_plan_review = review.checked; changed(); } });
  review.checked = task.needs_plan_review;
  const deps = el("details", { class: "plan-deps", dataset: { role: "task-deps" },
                               ontoggle: () => { if (deps.open) depsChoices(task, deps); } },
    el("summary", { dataset: { role: "after" } }));
  const card = el("li", { class: "plan-task", dataset: { uid: task.uid } },
    el("div", { class: "row" },
      el("label", { class: "field plan-ref-field" }, "Ref", ref),
      el("label", { class: "field plan-title-field" }, "Title", title)),
    el("div", { class: "row" },
      el("label", { class: "field" }, "Type", select(TASK_TYPES, task.task_type,
                                                     (v) => { task.task_type = v; changed(); })),
      el("label", { class: "field" }, "Priority", select(PRIORITIES, task.priority,
                                                         (v) => { task.priority = v; changed(); })),
      el("label", { class: "check" }, review, "Plan review"),
      el("span", { class: "spacer" }),
      el("button", { type: "button", class: "danger", text: "Remove task", dataset: { role: "remove-task" },
                     "aria-label": `Remove task ${name()}`, onclick: () => removeTask(task) })),
    el("label", { class: "field" }, "Description", content),
    deps);
  drawAfter(task, deps);
  return card;
}

const byUid = (uid) => edit.tasks.find((t) => t.uid === uid);

function drawAfter(task, deps) {
  const names = [...task.deps].map((uid) => byUid(uid)).filter(Boolean).map((t) => t.ref.trim() || "(no ref)");
  deps.querySelector("summary").textContent = names.length ? `Runs after: ${names.join(", ")}` : "Runs first (after nothing)";
}

// The choices: every other task, checked when this one runs after it.
function depsChoices(task, deps) {
  const others = edit.tasks.filter((t) => t !== task);
  const list = el("div", { class: "plan-dep-choices" }, ...(others.length ? others.map((other) => {
    const box = el("input", { type: "checkbox", dataset: { dep: other.uid },
                              onchange: () => {
                                if (box.checked) task.deps.add(other.uid); else task.deps.delete(other.uid);
                                changed(); drawAfter(task, deps); drawGraph();
                              } });
    box.checked = task.deps.has(other.uid);
    return el("label", { class: "check", dataset: { ref: other.ref.trim() } }, box,
      el("code", { text: other.ref.trim() || "(no ref)" }), ` ${other.title}`);
  }) : [el("span", { class: "muted", text: "No other task." })]));
  deps.querySelector(".plan-dep-choices")?.remove();
  deps.append(list);
}

// Refs or tasks changed: every "Runs after" says the new names, open choices are drawn again.
function refreshDeps() {
  for (const card of nodes.tasks.querySelectorAll(".plan-task")) {
    const task = byUid(Number(card.dataset.uid));
    if (!task) continue;
    const deps = card.querySelector(".plan-deps");
    drawAfter(task, deps);
    if (deps.open) depsChoices(task, deps);
    card.querySelector("[data-role='remove-task']").setAttribute("aria-label", `Remove task ${task.ref.trim() || "(no ref)"}`);
  }
}

function addTask() {
  const taken = new Set(edit.tasks.map((t) => t.ref.trim()));
  let n = edit.tasks.length + 1;
  while (taken.has(`task-${n}`)) n += 1;
  const task = { uid: ++uids, ref: `task-${n}`, title: "", content: "", task_type: "feature", priority: "medium",
                 needs_plan_review: false, extra: {}, deps: new Set() };
  edit.tasks.push(task);
  const card = taskCard(task);
  nodes.tasks.append(card);
  changed();
  refreshDeps();
  drawGraph();
  card.querySelector("[data-role='task-title']").focus();
}

// A removed task leaves every other task's "runs after".
function removeTask(task) {
  const index = edit.tasks.indexOf(task);
  edit.tasks.splice(index, 1);
  for (const other of edit.tasks) other.deps.delete(task.uid);
  nodes.tasks.querySelector(`.plan-task[data-uid="${task.uid}"]`)?.remove();
  changed();
  refreshDeps();
  drawGraph();
  const next = nodes.tasks.querySelectorAll(".plan-task")[Math.min(index, edit.tasks.length - 1)];
  (next?.querySelector("[data-role='task-title']") || nodes.editor.querySelector("[data-role='add-task']"))?.focus();
}

// ----- the order: tasks by step (a task's step is one more than the latest of its dependencies) ----

function graphOf() {
  if (edit) {
    return edit.tasks.map((t) => ({ key: t.uid, name: t.ref.trim() || "(no ref)",
                                    deps: [...t.deps].filter((uid) => byUid(uid)) }));
  }
  return plan.tasks.map((t) => ({ key: t.ref, name: t.ref, deps: t.depends_on || [] }));
}

function steps(nodesOf) {
  const byKey = new Map(nodesOf.map((n) => [n.key, n]));
  const depth = new Map();
  const visiting = new Set();
  const walk = (node) => {
    if (depth.has(node.key)) return depth.get(node.key);
    if (visiting.has(node.key)) return null;  // a cycle
    visiting.add(node.key);
    let d = 0;
    for (const dep of node.deps) {
      const other = byKey.get(dep);
      if (!other) continue;
      const below = walk(other);
      if (below === null) return null;
      d = Math.max(d, below + 1);
    }
    visiting.delete(node.key);
    depth.set(node.key, d);
    return d;
  };
  for (const node of nodesOf) if (walk(node) === null) return null;
  const levels = [];
  for (const node of nodesOf) (levels[depth.get(node.key)] ||= []).push(node.name);
  return levels;
}

function drawGraph() {
  const levels = steps(graphOf());
  nodes.graph.replaceChildren(el("h4", { text: "Order" }), levels === null
    ? el("p", { class: "warn-text", dataset: { role: "cycle" },
                text: "These dependencies make a cycle: no task of it could ever start." })
    : el("ol", { class: "plan-steps" }, ...levels.map((names, i) => el("li", { dataset: { step: i + 1 } },
      el("span", { class: "muted", text: i === 0 ? "First: " : "Then: " }), names.join(", ")))));
}

// ----- a plan that runs: each task's status, a link to it -------------------------------------

function statusOf(ref) {
  const id = plan.task_ids && plan.task_ids[ref];
  const summary = id ? findSummary(projectId, id) : null;
  return (summary && summary.status) || (plan.task_status && plan.task_status[ref]) || "";
}

function runTask(task) {
  const id = plan.task_ids && plan.task_ids[task.ref];
  const status = statusOf(task.ref);
  const after = task.depends_on || [];
  return el("li", { class: "plan-task readonly", dataset: { ref: task.ref, status } },
    el("div", { class: "plan-task-line" },
      el("code", { class: "plan-ref", text: task.ref }),
      id ? el("a", { href: `?task=${encodeURIComponent(projectId)}/${encodeURIComponent(id)}`, class: "plan-task-link",
                     dataset: { role: "task-link", task: id },
                     onclick: (event) => { event.preventDefault(); hooks.openTask(projectId, id); } }, task.title)
        : el("span", { class: "plan-task-title", text: task.title }),
      status ? el("span", { class: `plan-status status-${status}`, dataset: { role: "task-status" }, text: statusText(status) })
        : null),
    el("div", { class: "plan-task-meta muted", text: [task.task_type, task.priority,
                                                      after.length ? `after: ${after.join(", ")}` : "first"].join(" · ") }),
    task.content ? el("details", {}, el("summary", { text: "Description" }), el("pre", { text: task.content })) : null);
}

// Only the statuses changed: drawn in place (a focused link keeps its focus).
function drawStatuses() {
  if (!plan || plan.state === "draft" || !nodes.tasks) return;
  for (const row of nodes.tasks.querySelectorAll(".plan-task.readonly")) {
    const status = statusOf(row.dataset.ref);
    if (row.dataset.status === status) continue;
    row.dataset.status = status;
    const line = row.querySelector(".plan-task-line");
    const badge = line.querySelector("[data-role='task-status']");
    const next = el("span", { class: `plan-status status-${status}`, dataset: { role: "task-status" }, text: statusText(status) });
    if (badge) badge.replaceWith(next); else line.append(next);
  }
}

// ----- actions -------------------------------------------------------------------------------

function drawActions() {
  if (!plan || !nodes.actions) return;
  const state = plan.state;
  const button = (role, text, onclick, props = {}) => el("button", { type: "button", text, dataset: { role }, onclick, ...props });
  const buttons = [];
  if (state === "draft") {
    buttons.push(button("save", dirty ? "Save" : "Saved", () => save(), { disabled: !dirty }),
                 button("approve", dirty ? "Save and approve" : "Approve", approve, { class: "primary" }));
  } else if (state === "ready") {
    buttons.push(button("reopen", "Back to draft", () => act("reopen", "Back to draft: the plan can be edited")),
                 button("run", "Run", () => act("run", "Running: its tasks are on the board"), { class: "primary" }));
  }
  if (state !== "executing") buttons.push(deleteButton());
  nodes.actions.replaceChildren(...buttons);
}

function showError(text, { reload = false } = {}) {
  nodes.error.replaceChildren(text);
  if (reload) {
    nodes.error.append(" ", el("button", { type: "button", text: "Reload the plan", dataset: { role: "reload-plan" },
                                           onclick: () => readPlan() }));
  }
  nodes.error.hidden = !text;
}

// "body.plan.tasks.2.title: …" → "task 3 (ref) title: …": the server's words, placed for a person.
function readable(err) {
  const match = /^body\.plan(?:\.tasks\.(\d+))?(?:\.([\w.]+))?: ([\s\S]*)$/.exec(err.message || "");
  if (!match) return err.message;
  const [, index, field, text] = match;
  if (index === undefined) return field ? `${field}: ${text}` : text;
  const task = edit && edit.tasks[Number(index)];
  return `Task ${Number(index) + 1}${task ? ` (${task.ref.trim() || "no ref"})` : ""}${field ? ` ${field}` : ""}: ${text}`;
}

function failed(err) {
  if (err.code === "stale_plan") {
    showError("This plan was changed elsewhere since it was read here. Reload it to see that version "
              + "(what you changed here is dropped).", { reload: true });
  } else if (err.code === "plan_not_editable") {
    showError(`This plan can no longer be edited: ${err.message}`, { reload: true });
  } else if (err.status === 422) {
    showError(`Not saved: ${readable(err)}`);
  } else {
    showError(`Could not do that: ${err.message}`);
  }
}

let busy = false;

async function save({ quiet = false } = {}) {
  if (busy || !edit) return null;
  busy = true;
  showError("");
  try {
    const answer = await api(planPath(), { method: "PUT", body: { revision: plan.revision, plan: draftOf() } });
    if (!quiet) toast("Plan saved");
    plan = { task_status: {}, ...answer };
    edit = editable(plan);
    dirty = false;
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.role : null;
    draw();
    if (focused) nodes.editor.querySelector(`[data-role="${focused}"]`)?.focus();
    return plan;
  } catch (err) {
    failed(err);
    return null;
  } finally {
    busy = false;
  }
}

async function approve() {
  if (dirty && !(await save({ quiet: true }))) return;
  await act("approve", "Approved: the plan is ready to run");
}

async function act(action, said) {
  if (busy) return;
  busy = true;
  showError("");
  try {
    const answer = await api(planPath(`/${action}`), { method: "POST", body: { revision: plan.revision } });
    toast(said);
    plan = { task_status: {}, ...answer };
    edit = plan.state === "draft" ? editable(plan) : null;
    dirty = false;
    boardStamp = stampOfBoard();
    refetch.tries = 0;
    draw();
    nodes.actions.querySelector("button")?.focus();
    followUp();
  } catch (err) {
    failed(err);
  } finally {
    busy = false;
  }
}

function deleteButton() {
  let armed = null;
  const button = el("button", { type: "button", class: "danger", text: "Delete", dataset: { role: "delete-plan" } });
  const disarm = () => { clearTimeout(armed); armed = null; button.textContent = "Delete"; };
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = "Delete: click again";
      armed = setTimeout(disarm, 5000);
      return;
    }
    disarm();
    if (busy) return;
    busy = true;
    try {
      await api(planPath(), { method: "DELETE" });
      toast(`Plan “${plan.title}” deleted`);
      busy = false;
      openList();
    } catch (err) {
      busy = false;
      failed(err);
    }
  });
  return button;
}

// ----- following the board -------------------------------------------------------------------

// The board's summaries of the tasks this view is about (those of the plan shown, or of any plan
// for the list), as one string: when it changes, the plan (or list) is read again.
function stampOfBoard() {
  const tasks = projectId ? live.tasks.get(projectId) : null;
  if (!tasks) return "";
  const ids = plan && plan.task_ids ? new Set(Object.values(plan.task_ids)) : null;
  const mine = [];
  for (const task of tasks.values()) {
    if (!task.plan_id && !(ids && ids.has(task.id))) continue;
    if (planId && task.plan_id !== planId && !(ids && ids.has(task.id))) continue;
    mine.push(`${task.id}:${task.status}`);
  }
  return mine.sort().join(",");
}

// Called by the page after each change the board's stream brought.
export function boardChanged() {
  if (!nodes || !projectId) return;
  const stamp = stampOfBoard();
  if (stamp === boardStamp) return;
  boardStamp = stamp;
  if (planId && (!plan || plan.state === "draft")) return;  // a draft has no tasks: nothing to follow
  drawStatuses();
  clearTimeout(refetch.timer);
  refetch = { timer: setTimeout(() => (planId ? readPlan() : readList()), 100), tries: 0 };
}

// The plan's state follows its tasks on the agent a moment after the tasks change: while what the
// tasks say and what the plan says differ, it is read again a few times, less and less often.
function followUp() {
  clearTimeout(refetch.timer);
  if (!plan || plan.state !== "executing") return;
  const statuses = plan.tasks.map((t) => statusOf(t.ref));
  const settled = statuses.every((s) => s === "completed") || statuses.some((s) => ENDED.has(s) && s !== "completed");
  if (!settled || refetch.tries >= 6) return;
  const tries = refetch.tries + 1;
  refetch = { timer: setTimeout(() => { refetch.tries = tries; readPlan(); }, 250 * 2 ** tries), tries };
}
