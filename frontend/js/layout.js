// Small screens: a picker that scrolls the swipeable board to a column, and the projects folded
// into one summary line so the board gets the height. The CSS media queries do the rest.

import { el } from "./dom.js";

const SMALL = "(max-width: 900px)";

function columnName(column) {
  return column.querySelector("h2 span")?.textContent || column.dataset.status;
}

// The column whose left edge is nearest the board's: the one being looked at.
function shownColumn(board, columns) {
  const left = board.getBoundingClientRect().left;
  let best = columns[0];
  for (const column of columns) {
    if (Math.abs(column.getBoundingClientRect().left - left) < Math.abs(best.getBoundingClientRect().left - left)) best = column;
  }
  return best;
}

// Each button says its column's count, kept in step with the column header's.
export function setupColumnPicker(picker, board) {
  const columns = [...board.querySelectorAll(".column")];
  const buttons = columns.map((column) => {
    const count = el("span", { class: "picker-count", dataset: { role: "count" } });
    const header = column.querySelector(".count");
    const copy = () => { if (header && count.textContent !== header.textContent) count.textContent = header.textContent; };
    if (header) new MutationObserver(copy).observe(header, { childList: true, characterData: true, subtree: true });
    copy();
    return el("button", {
      type: "button", dataset: { status: column.dataset.status },
      onclick: () => {
        board.scrollTo({ left: column.offsetLeft - board.firstElementChild.offsetLeft, behavior: "smooth" });
        mark(column);
      },
    }, columnName(column), " ", count);
  });
  const mark = (column) => {
    for (const button of buttons) {
      if (button.dataset.status !== column.dataset.status) { button.removeAttribute("aria-current"); continue; }
      if (button.getAttribute("aria-current") === "true") continue;
      button.setAttribute("aria-current", "true");
      // The current column's button in view in the picker (which scrolls sideways on a phone);
      // only the picker moves, not the page as scrollIntoView would.
      const shown = picker.getBoundingClientRect();
      const at = button.getBoundingClientRect();
      if (at.left < shown.left || at.right > shown.right) {
        picker.scrollLeft += at.left - shown.left - (shown.width - at.width) / 2;
      }
    }
  };
  picker.replaceChildren(...buttons);
  if (columns.length) mark(columns[0]);
  let pending = false;
  board.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; mark(shownColumn(board, columns)); });
  }, { passive: true });
}

// Folded on a phone or tablet when the page opens (a tap opens it); the summary counts projects.
export function setupProjectsBox(box, summary) {
  if (window.matchMedia(SMALL).matches) box.open = false;
  const update = () => {
    const projects = box.querySelectorAll(".project");
    const down = box.querySelectorAll('.project[data-healthy="false"]').length;
    // A tracker sync in error is an outage too (its issues are not followed): said folded as well.
    const syncs = box.querySelectorAll('.project[data-healthy="true"] .project-source[data-state="error"]').length;
    const text = `Projects: ${projects.length}${down ? ` · ${down} unavailable` : ""}`
      + `${syncs ? ` · ${syncs} sync error${syncs === 1 ? "" : "s"}` : ""}`;
    if (summary.textContent !== text) summary.textContent = text;
    summary.dataset.problem = down || syncs ? "true" : "false";
  };
  new MutationObserver(update).observe(box.querySelector(".projects"), { childList: true, subtree: true, attributes: true,
                                                                          attributeFilter: ["data-healthy", "data-state"] });
  update();
}
