// Chat with a project (a view of js/workspace.js): the conversations, one conversation's messages,
// an answer streaming in as it is written (POST …/messages answers with Server-Sent Events), Stop,
// files to send with a message, tokens and cost, and "Make a plan" (→ the plan editor).
// Everything a person or the model wrote is text (textContent, line breaks kept by the CSS).

import { api, postEventStream, postFiles, projectPath } from "./api.js";
import { el, money, toast } from "./dom.js";
import { planTitle } from "./plans.js";
import { setItem, showView, shown } from "./workspace.js";
import { tokensText } from "./words.js";

let projectId = null;
let chatId = null;
let info = null;  // GET …/chats: { enabled, model, hint, chats }
let conversation = null;  // GET …/chats/{id} of the chat shown
let nodes = null;  // the view's parts
let listReads = 0;  // number the reads: an answer older than the latest is dropped
let chatReads = 0;
// Per "project/chat": an answer on its way ({ text, user, done, error, stopping, controller }),
// kept while the person looks elsewhere (closing the panel does not stop it).
const streams = new Map();
// Per "project/chat": what the person typed and the files uploaded for the next message.
const drafts = new Map();

const chatPath = (rest = "") => projectPath(projectId, `/chats${rest}`);
const keyOf = (p = projectId, c = chatId) => `${p}/${c}`;

function draftOf(key) {
  if (!drafts.has(key)) drafts.set(key, { text: "", files: [] });
  return drafts.get(key);
}

function when(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

// "1.2k in · 340 out · $0.0123" (what is known of it; "≥" where the answer ended before the
// API's final count: usage_partial).
function usage({ input_tokens: input, output_tokens: output, cost_usd: cost, usage_partial: partial } = {}) {
  const parts = [];
  const atLeast = partial ? "≥ " : "";
  if (input !== null && input !== undefined) parts.push(`${tokensText(input)} in`);
  if (output !== null && output !== undefined) parts.push(`${atLeast}${tokensText(output)} out`);
  if (cost !== null && cost !== undefined) parts.push(atLeast + money(cost));
  return parts.join(" · ");
}

// Whether an answer used anything (one refused before the model wrote used nothing: no "0 in · 0 out").
const spent = (m) => Boolean(m.input_tokens || m.output_tokens || m.cost_usd);

// A text with `code` spans (the server's hints): plain text and <code> elements, never markup.
const withCode = (text) => String(text).split("`").map((part, i) => (i % 2 ? el("code", { text: part }) : part));

const size = (bytes) => (bytes < 1024 ? `${bytes} B` : bytes < 1048576 ? `${(bytes / 1024).toFixed(0)} KB`
  : `${(bytes / 1048576).toFixed(1)} MB`);

// ----- the view -----------------------------------------------------------------------------

export const chatView = {
  show(body, project, itemId) {
    projectId = project;
    chatId = null;
    conversation = null;
    info = null;
    build(body);
    loadList().then(() => {
      if (!nodes || project !== projectId || chatId) return;  // the person chose meanwhile
      if (itemId) openChat(itemId);
      else if (info && info.chats.length && !window.matchMedia("(max-width: 600px)").matches) openChat(info.chats[0].id);
    });
  },
  leave() {
    keepDraft();
    nodes?.resize?.disconnect();
    projectId = null;
    chatId = null;
    nodes = null;
  },
};

function build(body) {
  nodes?.resize?.disconnect();
  nodes = {
    // Why the chat cannot be used: in the main area, where the conversation would be.
    hint: el("p", { class: "chat-hint", dataset: { role: "chat-hint" }, hidden: true }),
    empty: el("p", { class: "muted chat-empty", text: "Choose a conversation or start a new one." }),
    list: el("ul", { class: "chat-items", dataset: { role: "chat-list" } }),
    newChat: el("button", { type: "button", class: "primary", text: "New chat", dataset: { role: "new-chat" },
                            disabled: true, onclick: newChat }),  // until the list says the chat is enabled
    view: el("section", { class: "chat-view", "aria-label": "Conversation" }),
  };
  nodes.root = el("div", { class: "chat", dataset: { show: "list" } },
    el("div", { class: "chat-side" },
      el("div", { class: "chat-side-head" }, el("h3", { text: "Conversations" }), nodes.newChat),
      nodes.list),
    nodes.view);
  nodes.view.append(nodes.hint, nodes.empty);
  body.replaceChildren(nodes.root);
}

// The hint (null: none), where no conversation is shown.
function setHint(text) {
  nodes.hint.replaceChildren(...(text ? withCode(text) : []));
  nodes.hint.hidden = !text;
  nodes.empty.hidden = Boolean(text);
  nodes.root.dataset.enabled = String(!text);
}

async function loadList() {
  const mine = ++listReads;
  const project = projectId;
  try {
    const data = await api(chatPath());
    if (mine !== listReads || project !== projectId || !nodes) return;
    info = data;
  } catch (err) {
    if (project !== projectId || !nodes) return;
    info = { enabled: false, model: "", hint: null, chats: [] };
    setHint(`The chat cannot be reached: ${err.message}`);
    nodes.newChat.disabled = true;
    return;
  }
  drawList();
}

function drawList() {
  if (!nodes || !info) return;
  setHint(info.enabled ? null : info.hint || "The chat is not enabled on this dashboard.");
  nodes.newChat.disabled = !info.enabled;
  if (!info.chats.length) {
    nodes.list.replaceChildren(el("li", { class: "muted", text: "No conversations yet." }));
    return;
  }
  nodes.list.replaceChildren(...info.chats.map((chat) => el("li", {},
    el("button", { type: "button", class: "chat-item", dataset: { chat: chat.id },
                   "aria-current": chat.id === chatId ? "true" : null, onclick: () => openChat(chat.id) },
      el("span", { class: "chat-item-title", text: chat.title || "Untitled" }),
      el("span", { class: "chat-item-meta",
                   text: [when(chat.updated_at || chat.created_at), chat.cost_usd ? money(chat.cost_usd) : "",
                          `${chat.messages} message${chat.messages === 1 ? "" : "s"}`].filter(Boolean).join(" · ") }),
      chat.problem ? el("span", { class: "error-text", text: chat.problem }) : null))));
}

async function newChat() {
  nodes.newChat.disabled = true;
  try {
    const chat = await api(chatPath(), { method: "POST", body: {} });
    if (!nodes) return;
    info.chats.unshift(chat);
    await openChat(chat.id);
  } catch (err) {
    toast(`Could not start a chat: ${err.message}`);
  } finally {
    if (nodes && info) nodes.newChat.disabled = !info.enabled;
  }
}

async function openChat(id) {
  keepDraft();
  chatId = id;
  setItem(id);
  drawList();
  nodes.root.dataset.show = "conversation";
  await readChat();
}

// Reads the conversation shown (again) and draws it.
async function readChat() {
  const mine = ++chatReads;
  const project = projectId;
  const id = chatId;
  let data;
  try {
    data = await api(chatPath(`/${encodeURIComponent(id)}`));
  } catch (err) {
    if (mine !== chatReads || project !== projectId || id !== chatId || !nodes) return;
    nodes.view.replaceChildren(el("p", { class: "error-text", dataset: { role: "chat-error" },
                                         text: `Could not read the conversation: ${err.message}` }));
    return;
  }
  if (mine !== chatReads || project !== projectId || id !== chatId || !nodes) return;
  conversation = data;
  drawConversation();
}

function drawConversation() {
  const chat = conversation;
  const key = keyOf();
  const draft = draftOf(key);
  const enabled = Boolean(info && info.enabled);
  // The last answer failed: it can be asked again (the question it answered, sent once more).
  const last = chat.messages[chat.messages.length - 1];
  const asked = chat.messages[chat.messages.length - 2];
  const retry = enabled && last && last.role === "assistant" && last.error && asked && asked.role === "user" ? asked : null;
  const messages = el("ol", { class: "chat-messages", "aria-live": "polite", dataset: { role: "messages" } },
    ...chat.messages.map((m) => message(m, { retry: m === last ? retry : null })));
  const totals = el("span", { class: "chat-totals", dataset: { role: "chat-totals" }, title: "this conversation in all",
                              text: spent(chat.totals || {}) ? usage(chat.totals) : "" });
  const empty = !chat.messages.length;
  const makePlan = el("button", { type: "button", text: "Make a plan", dataset: { role: "make-plan" },
                                  hidden: !enabled, disabled: empty, onclick: () => planFrom(makePlan),
                                  title: empty ? "a plan is made from the conversation: ask something first"
                                    : "the model proposes a plan of tasks from this conversation" });
  // Each plan made from it, by its title (asked once; an id means nothing to a person).
  const plans = (chat.plan_ids || []).map((planId) => {
    const link = el("button", { type: "button", class: "link-button", dataset: { role: "chat-plan", plan: planId },
                                text: "Plan…", title: "open the plan made from this conversation",
                                onclick: () => showView("plans", projectId, planId) });
    planTitle(projectId, planId).then((title) => { link.textContent = title ? `Plan: ${title}` : "Plan (deleted)"; },
                                      () => { link.textContent = `Plan ${planId}`; });
    return link;
  });
  const head = el("div", { class: "chat-head" },
    el("button", { type: "button", class: "chat-back", text: "‹ Conversations",
                   onclick: () => { nodes.root.dataset.show = "list"; } }),
    el("h3", { class: "chat-title", text: chat.title || "Untitled" }),
    totals, makePlan, ...plans);
  const parts = { messages, totals, makePlan, empty, stick: true };
  let composer;
  if (enabled) {
    // A touch screen has no Ctrl key: its Send button is the way.
    const touch = window.matchMedia("(pointer: coarse)").matches;
    const input = el("textarea", { rows: 3, "aria-label": "Message", dataset: { role: "chat-input" },
                                   placeholder: touch ? "Ask about the project" : "Ask about the project (Ctrl+Enter sends)" });
    input.value = draft.text;
    input.addEventListener("input", () => { draft.text = input.value; });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); send(); }
    });
    const files = el("input", { type: "file", multiple: true, "aria-label": "Attach files", dataset: { role: "chat-files" },
                                onchange: () => upload(files) });
    const chips = el("ul", { class: "chat-chips", dataset: { role: "chat-attachments" } });
    const stop = el("button", { type: "button", class: "danger", text: "Stop", hidden: true, dataset: { role: "stop" },
                                onclick: stopAnswer });
    const sendButton = el("button", { type: "submit", class: "primary", text: "Send", dataset: { role: "send" } });
    composer = el("form", { class: "chat-composer", onsubmit: (event) => { event.preventDefault(); send(); } },
      input, chips, el("div", { class: "chat-composer-row" }, files, stop, sendButton));
    Object.assign(parts, { input, files, chips, stop, send: sendButton });
  } else {
    composer = el("p", { class: "chat-hint", dataset: { role: "chat-disabled" } },
      ...withCode((info && info.hint) || "The chat is not enabled on this dashboard."));
  }
  parts.error = el("p", { class: "error-text", dataset: { role: "chat-error" }, hidden: true });
  // The same conversation drawn again (an answer ended) while the person reads earlier messages: they stay there.
  const before = nodes.parts && nodes.view.dataset.chat === chat.id ? nodes.parts : null;
  const keep = before && !before.stick ? before.messages.scrollTop : null;
  nodes.view.replaceChildren(head, messages, parts.error, composer);
  nodes.view.dataset.chat = chat.id;
  nodes.parts = parts;
  // The list follows what is written while the person is at its end (or near it), also when it
  // gets shorter (Stop appearing, the phone's keyboard); once they scroll up it stays where they are.
  messages.addEventListener("scroll", () => {
    parts.stick = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 48;
  });
  nodes.resize?.disconnect();
  nodes.resize = new ResizeObserver(() => { if (parts.stick) messages.scrollTop = messages.scrollHeight; });
  nodes.resize.observe(messages);
  drawChips();
  const stream = streams.get(key);
  if (stream) drawStream(stream);
  else setBusy(false);
  if (keep === null) {
    messages.scrollTop = messages.scrollHeight;
  } else {
    parts.stick = false;
    messages.scrollTop = keep;
  }
  // The conversation chosen in the list (drawn again meanwhile): the focus goes to its box.
  if (!document.activeElement || document.activeElement === document.body) {
    (window.matchMedia("(max-width: 600px)").matches ? head.querySelector(".chat-back") : parts.input)?.focus();
  }
}

function message(m, { streaming = false, retry = null } = {}) {
  const attachments = m.attachments || [];
  // Tokens and cost are the answer's (a question costs nothing until it is answered; an answer
  // refused before the model wrote used nothing).
  const meta = [m.role === "assistant" && spent(m) ? usage(m) : "", m.stopped ? "stopped" : "", when(m.at)]
    .filter(Boolean).join(" · ");
  const flags = { role: m.role, id: m.id || "" };  // (a dataset value of null would be the text "null")
  if (streaming) flags.streaming = "1";
  if (m.stopped) flags.stopped = "1";
  return el("li", { class: "chat-message", dataset: flags },
    el("div", { class: "chat-who", text: m.role === "user" ? "You" : "Assistant" }),
    el("div", { class: "chat-text", dataset: { role: "text" }, text: m.text || "" }),
    attachments.length ? el("ul", { class: "chat-chips" }, ...attachments.map((a) =>
      el("li", { class: "chip", text: typeof a === "string" ? a : a.name || a.id || "file" }))) : null,
    el("div", { class: "chat-meta", dataset: { role: "meta" }, text: meta }),
    m.error ? el("p", { class: "error-text", dataset: { role: "message-error" }, text: m.error }) : null,
    retry ? el("button", { type: "button", text: "Retry", dataset: { role: "retry" },
                           title: "sends your question again, as a new message (the first one stays in the conversation)",
                           onclick: () => send({ text: retry.text || "",
                                                 attachments: (retry.attachments || []).map((a) => a.id ?? a).filter(Boolean) }) })
      : null);
}

// ----- sending, streaming, stopping ----------------------------------------------------------

function keepDraft() {
  if (nodes && nodes.parts && nodes.parts.input && chatId) draftOf(keyOf()).text = nodes.parts.input.value;
}

function setBusy(busy, stopping = false) {
  const parts = nodes && nodes.parts;
  if (!parts) return;
  parts.messages.setAttribute("aria-busy", String(busy));
  parts.makePlan.disabled = busy || parts.empty;
  for (const button of parts.messages.querySelectorAll("[data-role='retry']")) button.disabled = busy;
  if (!parts.send) return;
  parts.send.disabled = busy;
  parts.stop.hidden = !busy;
  parts.stop.disabled = stopping;
  parts.stop.textContent = stopping ? "Stopping…" : "Stop";
}

function showError(text) {
  const parts = nodes && nodes.parts;
  if (!parts) { toast(text); return; }
  parts.error.textContent = text;
  parts.error.hidden = !text;
}

// Sends what is in the box, or `again` ({ text, attachments }: a question sent once more by Retry,
// the box left as it is).
async function send(again = null) {
  const parts = nodes.parts;
  const key = keyOf();
  if (streams.has(key)) return;
  const draft = draftOf(key);
  const text = again ? again.text : parts.input.value.trim();
  const files = again ? again.attachments : draft.files.map((f) => f.id ?? f.name);
  if (!text && !files.length) { parts.input?.focus(); return; }  // files alone may go
  const project = projectId;
  const chat = chatId;
  const stream = { key, text: "", user: null, done: null, stored: null, error: null, stopping: false,
                   controller: new AbortController() };
  streams.set(key, stream);
  showError("");
  drawStream(stream);
  const refresh = () => { if (chatId === chat && projectId === project && nodes) drawStream(stream); };
  try {
    await postEventStream(projectPath(project, `/chats/${encodeURIComponent(chat)}/messages`),
      { text, attachments: files }, {
        signal: stream.controller.signal,
        onEvent: (name, data) => {
          if (name === "user") {
            stream.user = data;
            if (again) { refresh(); return; }
            // Stored: the box is free for the next message.
            draft.text = "";
            draft.files = [];
            if (chatId === chat && projectId === project && nodes && nodes.parts.input) {
              nodes.parts.input.value = "";
              drawChips();
            }
          } else if (name === "delta") {
            stream.text += data.text || "";
          } else if (name === "done") {
            stream.done = data.message;
            if (conversation && chatId === chat && data.totals) conversation.totals = data.totals;
          } else if (name === "error") {
            stream.error = data.message || "the answer failed";
            stream.stored = data.stored || null;  // the failed answer, stored: it says its error itself
            if (conversation && chatId === chat && data.totals) conversation.totals = data.totals;
          }
          refresh();
        },
      });
  } catch (err) {
    if (err.name !== "AbortError") stream.error = err.message;
  }
  streams.delete(key);
  if (chatId === chat && projectId === project && nodes) {
    await readChat();  // what was stored is what is shown (a message refused before it was stored stays in the box)
    if (stream.error && !stream.stored) showError(stream.error);  // (a stored answer shows its error)
    loadList();
  } else if (stream.error) {
    toast(`The chat's answer failed: ${stream.error}`);
  }
}

// The answer on its way, drawn into the conversation shown: the stored user message, then the
// assistant's text so far.
function drawStream(stream) {
  const parts = nodes.parts;
  const list = parts.messages;
  if (stream.user && !list.querySelector(`[data-id="${CSS.escape(stream.user.id || "")}"]`)) {
    list.querySelector("[data-streaming]")?.remove();
    list.append(message(stream.user));
  }
  let live = list.querySelector("[data-streaming]");
  const ended = stream.done || stream.stored;
  if (ended) {
    const done = message(ended);
    if (live) live.replaceWith(done);
    else if (!list.querySelector(`[data-id="${CSS.escape(ended.id || "")}"]`)) list.append(done);
    if (conversation) parts.totals.textContent = spent(conversation.totals || {}) ? usage(conversation.totals) : "";
  } else if (stream.user || stream.text) {
    if (!live) {
      live = message({ role: "assistant", text: "" }, { streaming: true });
      list.append(live);
    }
    const text = live.querySelector("[data-role='text']");
    if (text.textContent !== stream.text) text.textContent = stream.text;
    live.querySelector("[data-role='meta']").textContent = stream.stopping ? "stopping…" : "writing…";
  }
  setBusy(!stream.done && !stream.error, stream.stopping);
  if (parts.stick) list.scrollTop = list.scrollHeight;  // (after Stop came or went: the list's height changed)
}

// Stop: the dashboard ends the answer (its text so far is kept, marked stopped) and the stream
// ends with it; if the stop cannot be asked, dropping the stream stops it too.
async function stopAnswer() {
  const stream = streams.get(keyOf());
  if (!stream || stream.stopping) return;
  stream.stopping = true;
  drawStream(stream);
  try {
    await api(chatPath(`/${encodeURIComponent(chatId)}/stop`), { method: "POST" });
  } catch (err) {
    stream.controller.abort();
  }
}

// ----- attachments ---------------------------------------------------------------------------

async function upload(input) {
  const files = [...input.files];
  if (!files.length) return;
  const key = keyOf();
  const draft = draftOf(key);
  input.disabled = true;
  try {
    const answer = await postFiles(chatPath(`/${encodeURIComponent(chatId)}/attachments`), files);
    draft.files.push(...answer.attachments);
    showError("");
  } catch (err) {
    showError(`Could not attach: ${err.message}`);
  } finally {
    input.disabled = false;
    input.value = "";
  }
  if (keyOf() === key) drawChips();
}

function drawChips() {
  const parts = nodes && nodes.parts;
  if (!parts || !parts.chips) return;
  const draft = draftOf(keyOf());
  parts.chips.replaceChildren(...draft.files.map((file) => el("li", { class: "chip", dataset: { name: file.name } },
    `${file.name} (${size(file.size || 0)})`,
    el("button", { type: "button", class: "chip-remove", text: "×", "aria-label": `Do not send ${file.name}`,
                   onclick: () => { draft.files = draft.files.filter((f) => f !== file); drawChips(); } }))));
}

// ----- chat → plan ---------------------------------------------------------------------------

async function planFrom(button) {
  const project = projectId;
  const chat = chatId;
  button.disabled = true;
  button.textContent = "Making a plan…";
  showError("");
  try {
    const plan = await api(projectPath(project, `/chats/${encodeURIComponent(chat)}/plan`), { method: "POST" });
    toast(`Plan “${plan.title}” drafted`);
    const now = shown();
    if (now && now.view === "chat" && now.projectId === project && chatId === chat) showView("plans", project, plan.id);
  } catch (err) {
    if (chatId === chat && nodes) showError(`Could not make a plan: ${err.message}`);
    else toast(`Could not make a plan: ${err.message}`);
  } finally {
    if (button.isConnected) {
      button.disabled = false;
      button.textContent = "Make a plan";
    }
  }
}
