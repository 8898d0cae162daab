// Keyboard: the skip link, one tabbable card in the board (a roving tabindex) with arrow keys
// between cards and columns, and the open drawer keeping the focus (it is a modal dialog; the
// toasts' buttons, such as a cancel's Undo, stay in its Tab cycle).
// Independent of how the board is rendered: it only needs `.column` > `.card[data-key]`.

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), '
  + 'textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])';

let activeKey = ""; // the card that takes the board's one Tab stop

const columnsOf = (board) => [...board.querySelectorAll(".column")];
const cardsOf = (column) => [...column.querySelectorAll(".card")];

// One card has tabindex 0 (the last one focused, else the first), every other -1: a Tab passes
// the board in one step instead of one per card.
function rove(board) {
  const cards = board.querySelectorAll(".card");
  let target = null;
  if (activeKey) target = [...cards].find((card) => card.dataset.key === activeKey) || null;
  if (!target) target = cards[0] || null;
  for (const card of cards) {
    const want = card === target ? 0 : -1;
    if (card.tabIndex !== want) card.tabIndex = want;
  }
  return target;
}

function moveTo(board, card) {
  if (!card) return;
  activeKey = card.dataset.key;
  rove(board);
  card.focus();
  card.scrollIntoView({ block: "nearest", inline: "nearest" });
}

// The card an arrow key leads to from `card`, or null.
function next(board, card, key) {
  const columns = columnsOf(board);
  const column = card.closest(".column");
  const cards = cardsOf(column);
  const index = cards.indexOf(card);
  if (key === "ArrowDown") return cards[index + 1] || null;
  if (key === "ArrowUp") return cards[index - 1] || null;
  if (key === "Home") return cards[0];
  if (key === "End") return cards[cards.length - 1];
  // Left/Right: the nearest column that has cards, at the same position or its last card.
  const step = key === "ArrowRight" ? 1 : -1;
  for (let i = columns.indexOf(column) + step; i >= 0 && i < columns.length; i += step) {
    const there = cardsOf(columns[i]);
    if (there.length) return there[Math.min(index, there.length - 1)];
  }
  return null;
}

const KEYS = new Set(["ArrowDown", "ArrowUp", "ArrowLeft", "ArrowRight", "Home", "End"]);

// Tab stays within a modal panel (the drawer, the chat and plans panel). The toasts' buttons take
// part: the Undo of a cancel made in the drawer must be reachable.
export function trapFocus(panel, event) {
  const toasts = document.getElementById("toast");
  const items = [panel, toasts].filter(Boolean).flatMap((box) => [...box.querySelectorAll(FOCUSABLE)])
    .filter((node) => node.getClientRects().length);
  if (!items.length) return;
  event.preventDefault();
  const index = items.indexOf(document.activeElement);
  const step = event.shiftKey ? -1 : 1;
  if (index < 0) (event.shiftKey ? items[items.length - 1] : items[0]).focus();
  else items[(index + step + items.length) % items.length].focus();
}

export function setupKeys({ board, drawer, skipLink }) {
  // Whoever re-renders the board (a refresh, a stream event, "Show more"), the roving tabindex holds.
  new MutationObserver(() => rove(board)).observe(board, { childList: true, subtree: true });
  rove(board);
  board.addEventListener("focusin", (event) => {
    const card = event.target.closest?.(".card");
    if (card && card.dataset.key !== activeKey) { activeKey = card.dataset.key; rove(board); }
  });
  board.addEventListener("keydown", (event) => {
    const card = event.target.closest?.(".card");
    if (!card || !KEYS.has(event.key) || event.altKey || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    moveTo(board, next(board, card, event.key));
  });
  // The skip link lands on the board's tabbable card (or the board itself while it is empty)
  // without adding "#board" to the URL.
  skipLink.addEventListener("click", (event) => {
    event.preventDefault();
    const target = rove(board);
    (target || board).focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Tab" && !drawer.hidden && !document.querySelector("dialog[open]")) trapFocus(drawer, event);
  });
}
