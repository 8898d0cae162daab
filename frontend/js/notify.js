// Attention: a task that finished, failed or waits for a person (plan review, review) gets an in-page toast with an
// Open button and, if the person opted in ("Notify me", remembered in localStorage), a browser
// notification — only while the page is hidden (another tab, minimised): a visible page has the toast.

import { el, toast } from "./dom.js";
import { reasonText } from "./words.js";

const KEY = "baton.notify";
const SAID = { completed: "completed", failed: "failed", plan_review: "waits for plan review", review: "waits for review" };
const SAID_OF_MANY = { completed: "completed", failed: "failed", plan_review: "waiting for plan review",
                      review: "waiting for review" };

const supported = () => typeof window.Notification === "function";
export const notifying = () => supported() && localStorage.getItem(KEY) === "1" && Notification.permission === "granted";

// More news than this at once (a stream resumed after a while, a batch landing) is said in one
// toast and one notification, not one each.
const AT_ONCE = 3;

export function announce(project, tasks, open) {
  if (tasks.length <= AT_ONCE) {
    for (const task of tasks) announceOne(project, task, open);
    return;
  }
  const counts = new Map();
  for (const task of tasks) counts.set(task.status, (counts.get(task.status) || 0) + 1);
  const parts = [...counts].map(([status, n], i) => `${n}${i ? "" : " tasks"} ${SAID_OF_MANY[status]}`);
  const message = `${project.name}: ${parts.join(", ")}`;
  toast(message, { timeout: 8000 });
  if (notifying() && document.visibilityState !== "visible") {
    const note = new Notification("Baton", { body: message, tag: `${project.id}/batch` });
    note.onclick = () => { window.focus(); note.close(); };
  }
}

function announceOne(project, task, open) {
  const why = task.status === "failed" && task.error_reason ? `: ${reasonText(task.error_reason)}` : "";
  const message = `${project.name}: “${task.title}” ${SAID[task.status]}${why}`;
  toast(message, { action: { label: "Open", run: () => open(project.id, task.id) }, timeout: 8000,
                   key: `task:${project.id}/${task.id}` });
  if (notifying() && document.visibilityState !== "visible") {
    const note = new Notification(`Baton · ${SAID[task.status]}`, { body: message, tag: `${project.id}/${task.id}` });
    note.onclick = () => { window.focus(); open(project.id, task.id); note.close(); };
  }
}

// The "Notify me" toggle: asks the browser's permission when turned on.
export function notifyToggle() {
  const button = el("button", { type: "button", class: "notify-toggle", dataset: { role: "notify" },
                                "aria-pressed": "false" });
  const show = () => {
    const on = notifying();
    button.setAttribute("aria-pressed", String(on));
    button.textContent = on ? "Notifying" : "Notify me";
    button.title = !supported() ? "this browser has no notifications"
      : Notification.permission === "denied" ? "notifications are blocked for this site in the browser"
      : on ? "browser notifications when a task finishes, fails or needs review while this page is hidden; click to stop"
      : "get a browser notification when a task finishes, fails or needs review while this page is hidden";
    button.disabled = !supported();
  };
  button.addEventListener("click", async () => {
    if (notifying()) {
      localStorage.removeItem(KEY);
    } else {
      const answer = await Notification.requestPermission();
      if (answer === "granted") localStorage.setItem(KEY, "1");
      else toast("Notifications are not allowed for this page (the browser's site settings can allow them)");
    }
    show();
  });
  show();
  return button;
}
