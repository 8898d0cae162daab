// The side panel of one project's chat and plans (js/chat.js, js/plans.js are its views): opened
// from a project card, in the URL (?chat=<project>[/<chat id>], ?plans=<project>[/<plan id>]) so
// a reload comes back to it. It is a modal panel under the task drawer: a task opened from a plan
// shows on top of it, and closing the drawer comes back here.

import { el } from "./dom.js";
import { trapFocus } from "./keys.js";

const VIEWS = { chat: "Chat", plans: "Plans" };

const views = {};  // name -> { show(body, projectId, itemId), leave() }
let current = null;  // { view, projectId, itemId }
let opener = null;  // what had the focus when the panel opened: it gets it back
let inside = null;  // what last had the focus in the panel (back there when the drawer closes)
let hooks = { onChange: () => {}, projectName: (id) => id };
const $ = (id) => document.getElementById(id);

export function registerView(name, view) { views[name] = view; }
export const workspaceOpen = () => Boolean(current);
export const shown = () => current;

// Shows `view` of `projectId` (an item: a chat or plan id, or null for the list).
export function showView(view, projectId, itemId = null) {
  const panel = $("workspace");
  if (!current) opener = document.activeElement;
  if (current && (current.view !== view || current.projectId !== projectId)) views[current.view].leave();
  current = { view, projectId, itemId };
  panel.hidden = false;
  panel.dataset.view = view;
  panel.dataset.project = projectId;
  $("workspace-title").textContent = `${VIEWS[view]} · ${hooks.projectName(projectId)}`;
  for (const tab of panel.querySelectorAll(".workspace-tabs button")) {
    if (tab.dataset.view === view) tab.setAttribute("aria-current", "true");
    else tab.removeAttribute("aria-current");
  }
  views[view].show($("workspace-body"), projectId, itemId);
  hooks.onChange();
  // Opening moves the focus into the panel (a modal dialog), as the drawer does.
  if (!panel.contains(document.activeElement)) $("workspace-close").focus();
}

// A view moved to another item (or back to its list): the URL follows.
export function setItem(itemId) {
  if (!current) return;
  current.itemId = itemId;
  hooks.onChange();
}

// The task drawer closed over the panel: the focus goes back to where it was in the panel.
export function refocusWorkspace() {
  if (!current || !inside || !inside.isConnected) return false;
  inside.focus();
  return true;
}

export function closeWorkspace() {
  if (!current) return false;
  views[current.view].leave();
  current = null;
  $("workspace").hidden = true;
  $("workspace-body").replaceChildren();
  hooks.onChange();
  if (opener && opener.isConnected) opener.focus();
  opener = null;
  return true;
}

// [name, value] pairs for the page's URL.
export function workspaceParams() {
  if (!current) return [];
  return [[current.view, current.itemId ? `${current.projectId}/${current.itemId}` : current.projectId]];
}

// What the URL asks to show: { view, projectId, itemId } or null.
export function workspaceFromUrl(params) {
  for (const view of Object.keys(VIEWS)) {
    const value = params.get(view);
    if (!value) continue;
    const slash = value.indexOf("/");
    return slash < 0 ? { view, projectId: value, itemId: null }
      : { view, projectId: value.slice(0, slash), itemId: value.slice(slash + 1) || null };
  }
  return null;
}


export function setupWorkspace(handlers) {
  hooks = { ...hooks, ...handlers };
  $("workspace-close").addEventListener("click", closeWorkspace);
  const tabs = $("workspace").querySelector(".workspace-tabs");
  tabs.replaceChildren(...Object.entries(VIEWS).map(([view, label]) => el("button", {
    type: "button", dataset: { view }, text: label,
    onclick: () => { if (current && current.view !== view) showView(view, current.projectId); },
  })));
  $("workspace").addEventListener("focusin", (event) => { inside = event.target; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Tab" && current && $("drawer").hidden && !document.querySelector("dialog[open]")) {
      trapFocus($("workspace"), event);  // Tab stays in the panel while the drawer (which keeps its own) is closed
    }
  });
}
