// A task's diff in the drawer (GET …/tasks/{id}/diff): a file list, then each file's hunks with
// old and new line numbers. In review, a line takes a comment: a click, or Enter on the focused
// line, opens a box under it; comments collect in `comments` until the review is sent. Lines are
// one Tab stop (a roving tabindex) with the arrow keys between them. Everything is text.

import { el } from "./dom.js";

const SIGN = { add: "+", del: "−", context: " " };
const STATUS_WORDS = { added: "added", modified: "modified", deleted: "deleted", renamed: "renamed",
                       copied: "copied", type_changed: "type changed" };

let hintMade = false;

function hint() {
  // One description for every commentable line (aria-describedby), said once, not per line.
  if (!hintMade && !document.getElementById("diff-hint")) {
    document.body.append(el("span", { id: "diff-hint", hidden: true, text: "Enter: comment on this line" }));
  }
  hintMade = true;
  return "diff-hint";
}

const fileLabel = (file) => [
  file.old_path && file.old_path !== file.path ? `${file.old_path} → ${file.path}` : file.path,
  STATUS_WORDS[file.status] || file.status,
  file.binary ? "binary" : `+${file.additions} −${file.deletions}`,
  file.too_large ? "too large to show" : "",
].filter(Boolean).join(" · ");

// `review`: {comments: [], onChange()} when lines take comments, else null.
export function renderDiff(diff, review) {
  const lines = [];
  const root = el("section", { class: "diff", "aria-label": "Diff", dataset: { role: "diff", range: diff.range } });
  const stats = diff.stats || {};
  root.append(el("p", { class: "diff-stats", dataset: { role: "diff-stats" },
    text: `${stats.files ?? diff.files.length} file${stats.files === 1 ? "" : "s"} · +${stats.additions ?? 0} −${stats.deletions ?? 0}`
          + (diff.truncated ? " · more files than shown in full" : "") }));
  const heads = [];
  const list = el("ul", { class: "diff-files", "aria-label": "Changed files" });
  diff.files.forEach((file, index) => {
    list.append(el("li", {}, el("button", { type: "button", class: "diff-file-link", dataset: { path: file.path },
      text: fileLabel(file), onclick: () => {
        const head = heads[index];
        head.scrollIntoView({ block: "start" });
        head.focus();
      } })));
  });
  root.append(list);
  for (const file of diff.files) {
    const head = el("h4", { class: "diff-file-head", tabindex: -1, text: fileLabel(file) });
    heads.push(head);
    const section = el("div", { class: "diff-file", dataset: { path: file.path, status: file.status } }, head);
    if (file.binary) section.append(el("p", { class: "diff-note", text: "Binary file: no lines to show." }));
    else if (file.too_large) section.append(el("p", { class: "diff-note", text: "Too large to show here." }));
    else if (!(file.hunks || []).length) section.append(el("p", { class: "diff-note", text: "No line changes." }));
    else {
      const body = el("div", { class: "diff-body" });
      for (const hunk of file.hunks) {
        body.append(el("div", { class: "diff-hunk-head", text: hunk.header }));
        for (const line of hunk.lines) {
          const node = lineNode(file, line, review);
          lines.push(node);
          body.append(node);
        }
      }
      section.append(body);
    }
    root.append(section);
  }
  // Comments already collected (the diff drawn again, the drawer opened again) go under their lines.
  for (const comment of review ? review.comments : []) {
    const line = lines.find((node) => node.dataset.path === comment.path && node.dataset.side === comment.side
                                      && Number(node.dataset.line) === comment.line);
    if (line) line.after(pendingNode(line, comment, review));
  }
  if (review && lines.length) {
    lines[0].tabIndex = 0;
    root.addEventListener("keydown", (event) => {
      const line = event.target.closest?.(".diff-line");
      if (!line || event.target !== line) return;
      const index = lines.indexOf(line);
      const to = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: lines.length - 1 }[event.key];
      if (to !== undefined) {
        event.preventDefault();
        if (lines[to]) focusLine(lines, lines[to]);
      } else if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openBox(line, review);
      }
    });
    root.addEventListener("focusin", (event) => {
      if (event.target.classList?.contains("diff-line")) focusLine(lines, event.target, false);
    });
  }
  if (!diff.files.length) root.append(el("p", { class: "diff-note", text: "No changes." }));
  return root;
}

function focusLine(lines, line, move = true) {
  for (const other of lines) if (other !== line && other.tabIndex !== -1) other.tabIndex = -1;
  line.tabIndex = 0;
  if (move) line.focus();
}

function lineNode(file, line, review) {
  const number = line.kind === "del" ? line.old : line.new;
  const side = line.kind === "del" ? "old" : "new";
  const props = { class: `diff-line ${line.kind}`, dataset: { kind: line.kind, old: line.old ?? "", new: line.new ?? "",
                                                              path: file.path, side, line: number ?? "" } };
  if (review) {
    Object.assign(props, { role: "button", tabindex: -1, "aria-describedby": hint() });
    props.onclick = (event) => openBox(event.currentTarget, review);
  }
  return el("div", props,
    el("span", { class: "ln", "aria-hidden": "true", text: line.old ?? "" }),
    el("span", { class: "ln", "aria-hidden": "true", text: line.new ?? "" }),
    el("span", { class: "code", text: `${SIGN[line.kind] || " "}${line.text}` }));
}

// The comment box under a line: Add keeps the comment (shown under the line with Remove), Escape
// or Cancel closes it and gives the focus back to the line.
function openBox(line, review) {
  const next = line.nextElementSibling;
  if (next && next.classList.contains("comment-box")) { next.querySelector("textarea").focus(); return; }
  const { path, side } = line.dataset;
  const number = Number(line.dataset.line);
  const where = `${path} ${side === "old" ? "old " : ""}line ${number}`;
  const text = el("textarea", { rows: 3, "aria-label": `Comment on ${where}`, maxlength: 4000 });
  const close = () => { box.remove(); line.focus(); };
  const add = () => {
    const said = text.value.trim();
    if (!said) { text.focus(); return; }
    const comment = { path, line: number, side, text: said };
    review.comments.push(comment);
    box.replaceWith(pendingNode(line, comment, review));
    line.focus();
    review.onChange();
  };
  const box = el("div", { class: "comment-box", dataset: { role: "comment-box" } }, text,
    el("div", { class: "buttons" },
      el("button", { type: "button", text: "Cancel", onclick: close }),
      el("button", { type: "button", class: "primary", text: "Add comment", onclick: add })));
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();  // Escape closes this box, not the drawer
    if (event.key === "Escape") { event.preventDefault(); close(); }
    else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); add(); }
  });
  line.after(box);
  text.focus();
}

function pendingNode(line, comment, review) {
  const node = el("div", { class: "pending-comment", dataset: { role: "pending-comment" } },
    el("span", { class: "pending-label", text: "Your comment: " }), el("span", { text: comment.text }),
    el("button", { type: "button", text: "Remove", "aria-label": `Remove the comment on line ${comment.line}`,
                   onclick: () => {
                     review.comments.splice(review.comments.indexOf(comment), 1);
                     node.remove();
                     line.focus();
                     review.onChange();
                   } }));
  return node;
}
