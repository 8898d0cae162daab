// Building DOM without HTML strings: everything a user or an agent wrote becomes text nodes.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") for (const [k, v] of Object.entries(value)) node.style.setProperty(k, v);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

export const money = (usd) => (usd === null || usd === undefined ? "" : `$${Number(usd).toFixed(usd < 1 ? 4 : 2)}`);

// Toasts stack in one role=status container (#toast); each is its own element so an Undo toast is not
// replaced by the next message. toast(msg) keeps working; options: {action: {label, run}, timeout}.
// Returns a handle whose close() removes that toast early. Each toast is one line (the whole message
// is in its tooltip) with a × to dismiss it; at most SHOWN are up at once, so a burst of news cannot
// cover the board: a new one replaces the oldest, preferably one without an action (an Undo).
const SHOWN = 3;

// `key`: a newer toast with the same key replaces this one (e.g. one per task: the newest word on it).
export function toast(message, { action = null, timeout = 4000, key = null } = {}) {
  let box = document.getElementById("toast");
  if (!box) {
    box = el("div", { id: "toast", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  box.classList.add("toasts");
  box.hidden = false;
  const item = el("div", { class: "toast-item" }, el("span", { class: "toast-text", text: message, title: message }));
  let timer = null;
  const close = () => {
    clearTimeout(timer);
    item.remove();
    if (!box.children.length) box.hidden = true;
  };
  item.close = close;  // lets a newer toast replace this one
  if (key) {
    for (const other of [...box.children]) if (other.dataset.key === key) other.close ? other.close() : other.remove();
    item.dataset.key = key;
  }
  if (action) {
    item.dataset.action = "1";
    item.append(el("button", {
      type: "button",
      class: "toast-action",
      text: action.label,
      onclick: () => { close(); action.run(); },
    }));
  }
  item.append(el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", title: "Dismiss",
                             text: "×", onclick: close }));
  const items = [...box.children];
  for (let extra = items.length - SHOWN + 1; extra > 0; extra--) {
    const oldest = items.find((other) => !other.dataset.action) || items[0];
    items.splice(items.indexOf(oldest), 1);
    oldest.close ? oldest.close() : oldest.remove();
  }
  box.append(item);
  if (timeout > 0) timer = setTimeout(close, timeout);
  return { element: item, close };
}
