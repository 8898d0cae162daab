// Plans of a project (a view of js/workspace.js): the list by state with the files that are not
// valid plans, and the plan editor: title, summary, tasks (ref, title, type, priority,
// description, the tasks it runs after), add and remove tasks, the order they run in, Save (with
// the revision it was made on), Approve, Back to draft, Run, Rerun failed tasks, Delete. A plan
// that runs shows each task's status as the board's change stream reports it, each a link to the
// task's drawer.
// What a person changed in a draft and did not save is kept per plan while the page lives: closing
// the panel, the Chat tab or another plan do not lose it (it comes back marked, with Discard), and
// leaving the page asks first. While the view is open it reads the list or the plan again every
// few seconds and when the board's tasks change (plans have no stream of their own): a plan
// changed elsewhere shows as it is now or, while it has unsaved changes here, is said to have
// changed without losing them. A plan that becomes done or failed meanwhile is news (a toast).

import { api, projectPath } from "./api.js";
import { el, toast } from "./dom.js";
import { findSummary, live } from "./live.js";
import { setItem, showView } from "./workspace.js";
import { statusText } from "./words.js";

const STATES = [["draft", "Draft"], ["ready", "Ready"], ["executing", "Running"], ["done", "Done"], ["failed", "Failed"]];
const STATE_TEXT = Object.fromEntries(STATES);
const TASK_TYPES = ["feature", "bugfix", "refactor", "chore", "docs", "test"];
const PRIORITIES = ["low", "medium", "high", "urgent"];
const ENDED = new Set(["completed", "failed", "cancelled"]);
const RERUNNABLE = new Set(["failed", "cancelled"]);
const REFRESH_MS = 5000;  // how often an open Plans view reads again what it shows
const CONFIRM_MS = 5000;  // how long a "click again" stays armed

let hooks = { openTask: () => {} };
let projectId = null;
let planId = null;
let nodes = null;  // the view's root and parts
let plan = null;  // the plan shown, as last read (with task_status); with unsaved changes, the version they were made on
let edit = null;  // a draft's editable copy: { title, summary, tasks: [{ uid, ref, …, deps: Set of uids }] }
let dirty = false;
let remote = null;  // while there are unsaved changes: the plan as read since, when it differs ({ gone: true }: deleted)
let reads = 0;
let uids = 0;
let listStamp = "";  // what the list shown was drawn from (a read that brings the same draws nothing)
let boardStamp = "";  // what the board's summaries said of this view's tasks when last looked
let refetch = { timer: null, tries: 0 };
let poll = { timer: null, session: 0 };
let busy = false;
const unsaved = new Map();  // "project/plan" -> { base: the plan the changes were made on, edit }
const seen = new Map();  // "project/plan" -> the state last read (a change to done or failed is news)
const titles = new Map();  // "project/plan" -> its title, or the promise of it while asked

const keyOf = (project = projectId, id = planId) => `${project}/${id}`;

export function setupPlans(handlers) {
  hooks = { ...hooks, ...handlers };
  // Unsaved changes live in this page only: leaving it (reload, close, another address) asks first.
  window.addEventListener("beforeunload", (event) => {
    if (!unsaved.size) return;
    event.preventDefault();
    event.returnValue = "";  // (older browsers ask only when it is set)
  });
}

// A plan's title if this page knows it already (a link drawn again shows it at once).
export function knownPlanTitle(project, id) {
  const known = titles.get(keyOf(project, id));
  return typeof known === "string" ? known : null;
}

// A plan's title, for links to it elsewhere (the drawer, the chat): from what this view read, else
// asked once (null: there is no such plan).
export function planTitle(project, id) {
  const key = keyOf(project, id);
  const known = titles.get(key);
  if (typeof known === "string") return Promise.resolve(known);
  if (known) return known;
  const asked = api(projectPath(project, `/plans/${encodeURIComponent(id)}`)).then(
    (found) => { titles.set(key, found.title); return found.title; },
    (err) => { titles.delete(key); if (err.status === 404) return null; throw err; });
  titles.set(key, asked);
  return asked;
}

const plansPath = (rest = "") => projectPath(projectId, `/plans${rest}`);
const planPath = (rest = "") => plansPath(`/${encodeURIComponent(planId)}${rest}`);

export const plansView = {
  show(body, project, itemId) {
    projectId = project;
    nodes = { root: el("div", { class: "plans" }) };
    body.replaceChildren(nodes.root);
    poll.session += 1;
    schedule();
    if (itemId) openPlan(itemId);
    else openList();
  },
  leave() {
    clearTimeout(refetch.timer);
    clearTimeout(poll.timer);
    poll.session += 1;
    projectId = null;
    planId = null;
    plan = null;
    edit = null;
    dirty = false;
    remote = null;
    nodes = null;
  },
};

// Read again what is shown every few seconds while the view is open (not while the page is hidden
// or an action is on its way); each read is asked once the one before has answered.
function schedule() {
  clearTimeout(poll.timer);
  const session = poll.session;
  poll.timer = setTimeout(async () => {
    if (session !== poll.session || !nodes) return;
    if (document.visibilityState !== "hidden" && !busy) await (planId ? readPlan() : readList());
    if (session === poll.session && nodes) schedule();
  }, REFRESH_MS);
}

// What a read said of a plan: its title (for links), and news when it has become done or failed.
function remember(project, item) {
  const key = keyOf(project, item.id);
  titles.set(key, item.title);
  const before = seen.get(key);
  seen.set(key, item.state);
  if (!before || before === item.state || (item.state !== "done" && item.state !== "failed")) return;
  const open = project === projectId && item.id === planId;
  const said = item.state === "done" ? "is done: all its tasks completed"
    : `failed${item.reason ? `: ${item.reason}` : ""}`;
  toast(`Plan “${item.title}” ${said}`, {
    key: `plan:${key}`, timeout: 8000,
    action: open ? null : { label: "Open", run: () => showView("plans", project, item.id) } });
}

// ----- the list ------------------------------------------------------------------------------

async function openList() {
  planId = null;
  plan = null;
  edit = null;
  dirty = false;
  remote = null;
  setItem(null);
  boardStamp = stampOfBoard();
  listStamp = "";
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
    if (listStamp) return;  // a list is shown: it stays, the next read may answer
    nodes.root.replaceChildren(el("p", { class: "error-text", dataset: { role: "plans-error" },
                                         text: `Could not read the plans: ${err.message}` }));
    return;
  }
  if (mine !== reads || project !== projectId || planId || !nodes) return;
  for (const item of data.plans || []) remember(project, item);
  const marks = (data.plans || []).filter((p) => unsaved.has(keyOf(project, p.id))).map((p) => p.id);
  const stamp = JSON.stringify([data, marks]);
  if (stamp === listStamp) return;  // nothing new: the list (and what has the focus in it) stays
  listStamp = stamp;
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
                                                         progressText(p.progress)].filter(Boolean).join(" · ") }),
          unsaved.has(keyOf(projectId, p.id))
            ? el("span", { class: "plan-item-unsaved", dataset: { role: "unsaved" }, text: "Unsaved changes" }) : null)))));
  }).filter(Boolean);
  const invalid = data.invalid || [];
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.plan : null;
  nodes.root.replaceChildren(...[  // (replaceChildren would write a null as the text "null")
    el("div", { class: "plans-head" }, el("h3", { text: "Plans" }),
      el("span", { class: "muted", text: "A plan comes from a conversation (Chat, then “Make a plan”), or is written here." }),
      el("button", { type: "button", dataset: { role: "new-plan" }, onclick: newPlan, text: "New plan" })),
    ...(sections.length ? sections : [el("p", { class: "muted", dataset: { role: "no-plans" }, text: "No plans yet." })]),
    invalid.length ? el("section", { class: "plans-invalid", "aria-label": "Files that are not valid plans",
                                     dataset: { role: "invalid-plans" } },
      el("h4", { text: "Files that are not valid plans" }),
      el("ul", {}, ...invalid.map((bad) => el("li", {}, el("code", { text: bad.file }), ": ", bad.problem)))) : null,
  ].filter(Boolean));
  keepFocus(focused ? `.plan-item[data-plan="${CSS.escape(focused)}"]` : ".plan-item");
}

// A plan written by hand (no chat, or no key): a draft with one task to start from, opened to edit.
async function newPlan(event) {
  const button = event.currentTarget;
  button.disabled = true;
  const body = { plan: { title: "New plan", tasks: [{ ref: "task-1", title: "First task" }] } };
  try {
    const made = await api(plansPath(), { method: "POST", body });
    await openPlan(made.id);
  } catch (err) {
    button.disabled = false;
    toast(`Could not make a plan: ${err.message}`);
  }
}

// ----- one plan ------------------------------------------------------------------------------

async function openPlan(id) {
  planId = id;
  plan = null;
  edit = null;
  dirty = false;
  remote = null;
  refetch.tries = 0;
  setItem(id);
  nodes.root.replaceChildren(el("p", { class: "muted", text: "Loading the plan…" }));
  await readPlan();
}

const differs = (a, b) => a.revision !== b.revision || a.state !== b.state;

async function readPlan() {
  const mine = ++reads;
  const project = projectId;
  const id = planId;
  const key = keyOf(project, id);
  let data;
  try {
    data = await api(planPath());
  } catch (err) {
    if (mine !== reads || project !== projectId || id !== planId || !nodes) return;
    if (err.status === 404) { gone(key); return; }
    if (!plan) {
      nodes.root.replaceChildren(backButton(), el("p", { class: "error-text", dataset: { role: "plan-error" },
                                                         text: `Could not read the plan: ${err.message}` }));
    }
    return;  // a plan is shown: it stays, the next read may answer
  }
  if (mine !== reads || project !== projectId || id !== planId || !nodes) return;
  remember(project, data);
  if (!plan && unsaved.has(key)) {  // opened again: the changes not saved come back
    const kept = unsaved.get(key);
    plan = kept.base;
    edit = kept.edit;
    dirty = true;
    remote = differs(kept.base, data) ? data : null;
    boardStamp = stampOfBoard();
    draw();
    return;
  }
  if (dirty) {  // the changes stay; what the plan is now is said beside them
    const newer = differs(plan, data) ? data : null;
    if (newer && remote && !remote.gone && !differs(remote, newer)) return;
    if (!newer && !remote) return;
    remote = newer;
    drawNotice();
    drawActions();
    return;
  }
  const same = plan && nodes.editor && !differs(plan, data);
  plan = data;
  boardStamp = stampOfBoard();
  if (same) {  // only its tasks moved on: drawn in place (a focused link keeps its focus)
    drawStatuses();
    followUp();
    return;
  }
  edit = data.state === "draft" ? editable(data) : null;
  draw();
  followUp();
}

// The plan is no more (deleted here or elsewhere).
function gone(key) {
  seen.delete(key);
  titles.delete(key);
  if (plan && dirty) {  // the changes stay on the screen until the person lets them go
    remote = { gone: true };
    drawNotice();
    drawActions();
    return;
  }
  const lost = unsaved.delete(key);
  plan = null;
  edit = null;
  nodes.root.replaceChildren(backButton(), el("p", { class: "error-text", dataset: { role: "plan-error" },
    text: `This plan no longer exists: it was deleted.${lost ? " The changes made to it here are dropped." : ""}` }));
  keepFocus(".plan-back");
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

// A button that acts on a second click within a few seconds (the first one says so).
function confirmed(label, armedLabel, run, props = {}) {
  let armed = null;
  const button = el("button", { type: "button", text: label, ...props });
  const disarm = () => { clearTimeout(armed); armed = null; button.textContent = label; };
  button.addEventListener("click", () => {
    if (!armed) {
      button.textContent = armedLabel;
      armed = setTimeout(disarm, CONFIRM_MS);
      return;
    }
    disarm();
    run();
  });
  return button;
}

function draw() {
  const focus = focusOf();
  const editing = plan.state === "draft";
  nodes.error = el("p", { class: "error-text", role: "alert", dataset: { role: "plan-error" }, hidden: true });
  nodes.notice = el("div", { class: "plan-notice", role: "status", dataset: { role: "plan-elsewhere" }, hidden: true });
  nodes.graph = el("section", { class: "plan-graph", "aria-label": "Order of the tasks", dataset: { role: "plan-order" } });
  nodes.tasks = el("ol", { class: "plan-tasks" });
  nodes.actions = el("div", { class: "plan-actions" });
  nodes.unsaved = el("span", { class: "plan-unsaved", dataset: { role: "unsaved" }, hidden: true },
    el("span", { text: "Unsaved changes" }),
    confirmed("Discard", "Discard: click again", discard,
              { class: "link-button", dataset: { role: "discard" }, title: "drop the changes made here since the last save" }));
  const head = el("div", { class: "plan-head" },
    backButton(),
    el("span", { class: `plan-state state-${plan.state}`, dataset: { role: "plan-state" }, text: STATE_TEXT[plan.state] || plan.state }),
    el("span", { class: "muted", dataset: { role: "plan-revision" }, text: `revision ${plan.revision}` }),
    nodes.unsaved,
    plan.chat_id ? el("button", { type: "button", class: "link-button", text: "its conversation",
                                  onclick: () => showView("chat", projectId, plan.chat_id) }) : null);
  const parts = [head, nodes.notice];
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
  if (dirty) nodes.editor.dataset.dirty = "1";
  nodes.root.replaceChildren(nodes.editor);
  drawTasks();
  drawGraph();
  drawActions();
  drawNotice();
  if (!refocus(focus)) keepFocus(".plan-back");
}

// What has the focus in the editor (its role, and its task's place), to give it back once drawn again.
function focusOf() {
  const node = document.activeElement;
  if (!node || !nodes.root.contains(node) || !node.dataset || !node.dataset.role) return null;
  const card = node.closest(".plan-task");
  return { role: node.dataset.role, index: card ? [...card.parentNode.children].indexOf(card) : -1 };
}

function refocus(focus) {
  if (!focus) return false;
  const scope = focus.index >= 0 ? nodes.tasks.children[focus.index] : nodes.editor;
  const target = scope && scope.querySelector(`[data-role="${CSS.escape(focus.role)}"]`);
  if (target) target.focus();
  return Boolean(target) && document.activeElement === target;
}

// What had the focus was drawn again (a plan chosen in the list, a plan saved): it goes to `selector`.
function keepFocus(selector) {
  const focused = document.activeElement;
  if (!focused || focused === document.body) nodes.root.querySelector(selector)?.focus();
}

function changed() {
  dirty = true;
  unsaved.set(keyOf(), { base: plan, edit });
  if (nodes.editor) nodes.editor.dataset.dirty = "1";
  showError("");  // what the server refused was what has just changed
  drawActions();
}

// Drops the changes not saved: the plan as it is now (read again).
function discard() {
  unsaved.delete(keyOf());
  dirty = false;
  if (remote && remote.gone) {
    remote = null;
    openList();
    return;
  }
  remote = null;
  edit = plan.state === "draft" ? editable(plan) : null;
  draw();
  readPlan();
}

// Said while there are unsaved changes and the plan changed (or went) elsewhere.
function drawNotice() {
  if (!nodes.notice) return;
  if (!remote) {
    nodes.notice.hidden = true;
    nodes.notice.replaceChildren();
    return;
  }
  nodes.notice.replaceChildren(...(remote.gone
    ? ["This plan was deleted elsewhere: the changes made here cannot be saved. ",
       el("button", { type: "button", text: "Discard them", dataset: { role: "reload-plan" }, onclick: discard })]
    : [`This plan was changed elsewhere (now ${STATE_TEXT[remote.state] || remote.state}, revision ${remote.revision}). `
       + "Your changes here are kept until you reload it; reloading shows that version and drops them. ",
       el("button", { type: "button", text: "Reload the plan", dataset: { role: "reload-plan" }, onclick: discard })]));
  nodes.notice.hidden = false;
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

// The names of a cycle in the order they wait for each other ([a, b, a]: a runs after b, b after a), or null.
function cycleOf(graph) {
  const byKey = new Map(graph.map((n) => [n.key, n]));
  const state = new Map();  // key -> "open" while on the path walked, "done" after
  const path = [];
  const walk = (node) => {
    state.set(node.key, "open");
    path.push(node);
    for (const dep of node.deps) {
      const other = byKey.get(dep);
      if (!other) continue;
      if (state.get(dep) === "open") return [...path.slice(path.indexOf(other)), other].map((n) => n.name);
      if (!state.has(dep)) {
        const found = walk(other);
        if (found) return found;
      }
    }
    path.pop();
    state.set(node.key, "done");
    return null;
  };
  for (const node of graph) {
    if (state.has(node.key)) continue;
    const found = walk(node);
    if (found) return found;
  }
  return null;
}

// The tasks by step, when there is no cycle.
function steps(graph) {
  const byKey = new Map(graph.map((n) => [n.key, n]));
  const depth = new Map();
  const walk = (node) => {
    if (depth.has(node.key)) return depth.get(node.key);
    depth.set(node.key, 0);  // (no cycle: only reached again once known)
    const d = Math.max(0, ...node.deps.map((dep) => byKey.get(dep)).filter(Boolean).map((other) => walk(other) + 1));
    depth.set(node.key, d);
    return d;
  };
  for (const node of graph) walk(node);
  const levels = [];
  for (const node of graph) (levels[depth.get(node.key)] ||= []).push(node.name);
  return levels;
}

function cycleText(names) {
  const pairs = names.slice(0, -1).map((name, i) => `${name} runs after ${names[i + 1]}`);
  return `These tasks wait for each other: ${pairs.join(", ")}. None of them could ever start: `
    + "take one of these “Runs after” away to save the plan.";
}

function drawGraph() {
  const graph = graphOf();
  const cycle = cycleOf(graph);
  nodes.graph.replaceChildren(el("h4", { text: "Order" }), cycle
    ? el("p", { class: "warn-text", dataset: { role: "cycle" }, text: cycleText(cycle) })
    : el("ol", { class: "plan-steps" }, ...steps(graph).map((names, i) => el("li", { dataset: { step: i + 1 } },
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
  let moved = false;
  for (const row of nodes.tasks.querySelectorAll(".plan-task.readonly")) {
    const status = statusOf(row.dataset.ref);
    if (row.dataset.status === status) continue;
    moved = true;
    row.dataset.status = status;
    const line = row.querySelector(".plan-task-line");
    const badge = line.querySelector("[data-role='task-status']");
    const next = el("span", { class: `plan-status status-${status}`, dataset: { role: "task-status" }, text: statusText(status) });
    if (badge) badge.replaceWith(next); else line.append(next);
  }
  if (moved && plan.state === "failed") drawActions();  // what "Rerun failed tasks" would rerun
}

// ----- actions -------------------------------------------------------------------------------

function drawActions() {
  if (!plan || !nodes.actions) return;
  const state = plan.state;
  const button = (role, text, onclick, props = {}) => el("button", { type: "button", text, dataset: { role }, onclick, ...props });
  const buttons = [];
  if (state === "draft") {
    // Nothing the server would refuse anyway: a cycle, or a version that is no longer the plan's.
    const why = edit && cycleOf(graphOf()) ? "the tasks wait for each other in a cycle (see Order)"
      : remote ? (remote.gone ? "this plan was deleted elsewhere" : "this plan was changed elsewhere: reload it first") : "";
    buttons.push(button("save", dirty ? "Save" : "Saved", () => save(), { disabled: !dirty || Boolean(why), title: why || null }),
                 button("approve", dirty ? "Save and approve" : "Approve", approve,
                        { class: "primary", disabled: Boolean(why), title: why || null }));
  } else if (state === "ready") {
    buttons.push(button("reopen", "Back to draft", () => act("reopen", "Back to draft: the plan can be edited")),
                 button("run", "Run", () => act("run", "Running: its tasks are on the board"), { class: "primary" }));
  } else if (state === "failed") {
    const again = rerunnable();
    if (again.length) {
      buttons.push(button("rerun-failed", `Rerun failed tasks (${again.length})`, () => rerunFailed(again), {
        class: "primary", title: "runs its failed and cancelled tasks again; the tasks waiting for them follow" }));
    }
  }
  if (state !== "executing") buttons.push(deleteButton());
  nodes.actions.replaceChildren(...buttons);
  if (nodes.unsaved) nodes.unsaved.hidden = !dirty;
  if (nodes.editor) {
    if (dirty) nodes.editor.dataset.dirty = "1";
    else delete nodes.editor.dataset.dirty;
  }
}

// The ids of the plan's tasks that failed or were cancelled.
function rerunnable() {
  const ids = plan.task_ids || {};
  return plan.tasks.filter((t) => ids[t.ref] && RERUNNABLE.has(statusOf(t.ref))).map((t) => ids[t.ref]);
}

function showError(text) {
  if (!nodes || !nodes.error) return;
  nodes.error.replaceChildren(text);
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

const CHANGED_ELSEWHERE = new Set(["stale_plan", "plan_not_editable", "invalid_plan_state"]);

function failed(err) {
  if (err.status === 404) {
    gone(keyOf());
  } else if (CHANGED_ELSEWHERE.has(err.code)) {
    // Read again: with unsaved changes the notice says what it is now (they stay), else it is shown.
    const key = keyOf();
    readPlan().then(() => {
      if (!dirty && keyOf() === key) showError(`Not done: the plan changed elsewhere (${err.message}); here it is as it is now.`);
    });
  } else if (err.status === 422) {
    showError(`Not saved: ${readable(err)}`);
  } else {
    showError(`Could not do that: ${err.message}`);
  }
}

async function save({ quiet = false } = {}) {
  if (busy || !edit) return null;
  busy = true;
  ++reads;  // a read asked before this answer would be older than it
  showError("");
  const key = keyOf();
  try {
    const answer = await api(planPath(), { method: "PUT", body: { revision: plan.revision, plan: draftOf() } });
    if (!quiet) toast("Plan saved");
    unsaved.delete(key);
    if (key !== keyOf() || !nodes) return null;
    plan = { task_status: {}, ...answer };
    remember(projectId, plan);
    edit = editable(plan);
    dirty = false;
    remote = null;
    draw();
    return plan;
  } catch (err) {
    if (key === keyOf() && nodes) failed(err);
    else toast(`Could not save the plan: ${err.message}`);
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
  if (busy || !nodes) return;
  busy = true;
  ++reads;
  showError("");
  const key = keyOf();
  try {
    const answer = await api(planPath(`/${action}`), { method: "POST", body: { revision: plan.revision } });
    toast(said);
    unsaved.delete(key);
    if (key !== keyOf() || !nodes) return;
    plan = { task_status: {}, ...answer };
    remember(projectId, plan);
    edit = plan.state === "draft" ? editable(plan) : null;
    dirty = false;
    remote = null;
    boardStamp = stampOfBoard();
    refetch.tries = 0;
    draw();
    nodes.actions.querySelector("button")?.focus();
    followUp();
  } catch (err) {
    if (key === keyOf() && nodes) failed(err);
    else toast(`Could not do that: ${err.message}`);
  } finally {
    busy = false;
  }
}

// A failed plan's failed and cancelled tasks run again (each as the drawer's Rerun does); the
// tasks blocked by them are pending again, and the plan is executing once its tasks say so.
async function rerunFailed(ids) {
  if (busy) return;
  busy = true;
  showError("");
  const project = projectId;
  const key = keyOf();
  const problems = [];
  for (const id of ids) {
    try {
      await api(projectPath(project, `/tasks/${encodeURIComponent(id)}/rerun`), { method: "POST" });
    } catch (err) {
      problems.push(err.message);
    }
  }
  busy = false;
  const queued = ids.length - problems.length;
  if (queued) toast(`${queued} task${queued === 1 ? "" : "s"} of the plan queued again`);
  if (key !== keyOf() || !nodes) return;
  if (problems.length) showError(`Could not rerun ${problems.length} of them: ${problems[0]}`);
  refetch.tries = 0;
  readPlan();
}

// A plan that ran keeps its tasks on the board: the button says so.
function deleteButton() {
  const ran = Object.keys(plan.task_ids || {}).length > 0;
  const label = ran ? "Delete plan (its tasks stay)" : "Delete plan";
  return confirmed(label, `${label}: click again`, remove, { class: "danger", dataset: { role: "delete-plan" } });
}

async function remove() {
  if (busy) return;
  busy = true;
  const key = keyOf();
  const ran = Object.keys(plan.task_ids || {}).length > 0;
  try {
    await api(planPath(), { method: "DELETE" });
    toast(`Plan “${plan.title}” deleted${ran ? " (its tasks stay on the board)" : ""}`);
    unsaved.delete(key);
    seen.delete(key);
    titles.delete(key);
    busy = false;
    if (key === keyOf() && nodes) openList();
  } catch (err) {
    busy = false;
    if (key === keyOf() && nodes) failed(err);
  }
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
