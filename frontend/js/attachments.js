// ----- attachments ----- a task's files in the drawer (name, size, a download link) with an upload
// input, and the new-task form's files (uploaded once the task exists). Names are shown as text.

import { postFiles, projectPath } from "./api.js";
import { el, toast } from "./dom.js";

const filesPath = (projectId, taskId, name = "") =>
  projectPath(projectId, `/tasks/${encodeURIComponent(taskId)}/attachments${name ? `/${encodeURIComponent(name)}` : ""}`);

export function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

// What the drawer shows: one section per opened task, kept while it stays open (so a file being
// chosen is not lost when the task's summary changes), its list merged from each read and upload.
let shown = null; // { key, items: Map(name -> attachment), box, list, input, error }

export function resetAttachments(box) {
  shown = null;
  box.replaceChildren();
  box.hidden = true;
}

function merge(items, attachments) {
  for (const a of attachments || []) {
    const had = items.get(a.name);
    if (!had || String(had.at) <= String(a.at)) items.set(a.name, a);
  }
}

function drawList() {
  const { items, list, key } = shown;
  const [projectId, taskId] = key.split("\n");
  const rows = [...items.values()].map((a) => el("li", { dataset: { name: a.name } },
    el("a", { href: filesPath(projectId, taskId, a.name), download: a.name, dataset: { role: "attachment-link" },
              text: a.name }),
    el("span", { class: "muted", text: ` ${sizeText(a.size)}${a.image ? " · image" : ""}` })));
  list.replaceChildren(...rows);
  list.hidden = !rows.length;
  shown.empty.hidden = Boolean(rows.length) || !shown.known;  // known: a full read said which files
}

async function upload(projectId, taskId, files) {
  const answer = await postFiles(filesPath(projectId, taskId), files);
  const replaced = answer.replaced || [];
  const count = answer.attachments.length;
  toast(`Attached ${count} file${count === 1 ? "" : "s"}${replaced.length ? ` (replaced ${replaced.join(", ")})` : ""}`);
  return answer.attachments;
}

// Called whenever the drawer draws a task (`task`: its summary merged over the last full read).
export function showAttachments(box, projectId, taskId, task) {
  const key = `${projectId}\n${taskId}`;
  if (!shown || shown.key !== key) {
    const input = el("input", { type: "file", multiple: true, dataset: { role: "attach-input" } });
    const error = el("p", { class: "error-text", hidden: true, dataset: { role: "attach-error" } });
    const list = el("ul", { class: "attachment-list", dataset: { role: "attachments" } });
    const empty = el("p", { class: "muted", text: "No files attached." });
    shown = { key, items: new Map(), box, list, input, error, empty, known: false };
    const mine = shown;
    input.addEventListener("change", async () => {
      const files = [...input.files];
      if (!files.length) return;
      input.disabled = true;
      error.hidden = true;
      box.dataset.uploading = "1";
      try {
        const added = await upload(projectId, taskId, files);
        if (shown === mine) { merge(mine.items, added); drawList(); }
      } catch (err) {
        error.textContent = `Not attached: ${err.message}`;
        error.hidden = false;
      } finally {
        input.value = "";
        input.disabled = false;
        delete box.dataset.uploading;
      }
    });
    box.replaceChildren(el("h3", { text: "Attachments" }), list, empty,
      el("label", { class: "attach-label" }, "Attach files ", input), error);
    box.hidden = false;
  }
  if (Array.isArray(task.attachments)) shown.known = true;
  merge(shown.items, task.attachments);
  drawList();
}

// The new-task form's files, once the task exists. A failure does not undo the task: it says so.
export async function attachToNewTask(projectId, task, files) {
  try {
    await upload(projectId, task.id, files);
  } catch (err) {
    toast(`Created “${task.title}”, but its files were not attached: ${err.message}`, { timeout: 8000 });
  }
}
