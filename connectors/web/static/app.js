// The web chat page: sidebar, messages with typewriter rendering, composer, offline mode.
//
// Invariant: text reaches a conversation's view only if it is tagged with that conversation's
// id — events carry conversation_id and history answers are dropped when the user has moved on —
// so one conversation's text can never appear in another.

import { ApiError, OfflineError, identity, makeApi, setToken } from "./api.js";
import { makeEstimate, showCost } from "./costs.js";
import { cache } from "./store.js";
import { downscale, isVideo } from "./upload.js";
import { animate, nearBottom, renderBody, scrollToBottom, stopAnimations, toView } from "./view.js";

const $ = (sel) => document.querySelector(sel);
const id = identity();
const api = makeApi(id);
const listEl = $("#list");
// tokens and cost of what would be sent, under the composer (see costs.js)
const estimate = makeEstimate(api, $("#estimate"), () => state.current);
const EVENTS = ["delta", "replace", "done", "interrupted", "error", "image", "remove", "user", "thinking", "reset", "cost"];

const state = {
  info: { title: "relaybot", max_upload_mb: 20, max_text: 100000 },
  conversations: [],
  current: null,      // id of the conversation shown
  messages: [],       // view models of the shown conversation, in order
  hasMore: false,
  streaming: false,   // a reply is on its way in the shown conversation
  online: true,
  attachments: [],    // uploaded images and videos for the next message
  loadSeq: 0,
};

function renderAll() {
  listEl.replaceChildren(...state.messages.map((m) => { renderBody(m); return m.node; }));
  $("#empty").hidden = state.messages.length > 0 || !!$("#thinking");
  $("#load-older").hidden = !state.hasMore;
  const conv = state.conversations.find((c) => c.id === state.current);
  $("#conv-title").textContent = conv ? conv.title : "New chat";
  for (const [sel, fmt] of [["#export-md", "md"], ["#export-json", "json"]]) {
    const a = $(sel);
    a.hidden = state.current == null || !state.online;
    if (state.current != null) {
      a.href = `/api/conversations/${state.current}/export?format=${fmt}&client=${id.client}`;
    }
  }
  renderRegenerate();
  updateButtons();
}

function addMessage(raw) {
  const m = toView(raw);
  state.messages.push(m);
  const thinking = $("#thinking");
  renderBody(m);
  listEl.insertBefore(m.node, thinking && thinking.parentNode === listEl ? thinking : null);
  $("#empty").hidden = true;
  renderRegenerate();
  return m;
}

function showThinking() {
  if ($("#thinking")) return;
  const node = document.createElement("div");
  node.id = "thinking";
  node.className = "msg assistant thinking";
  node.setAttribute("aria-label", "thinking");
  node.append(...[0, 1, 2].map(() => document.createElement("i")));
  listEl.appendChild(node);
  $("#empty").hidden = true;
  scrollToBottom();
}

function hideThinking() {
  const node = $("#thinking");
  if (node) node.remove();
}

function renderRegenerate() {
  for (const old of listEl.querySelectorAll(".regenerate")) old.remove();
  const last = state.messages[state.messages.length - 1];
  if (!last || last.role !== "assistant" || state.streaming || !state.online || !last.node) return;
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "regenerate";
  btn.textContent = "↻ Regenerate";
  btn.addEventListener("click", regenerate);
  last.node.appendChild(btn);
}

function updateButtons() {
  $("#send").hidden = state.streaming && !$("#input").value.trim();
  $("#stop").hidden = !state.streaming;
}

function notice(text) {
  const el = $("#notice");
  el.textContent = text || "";
  el.hidden = !text;
}

function setOnline(online) {
  if (state.online === online) return;
  state.online = online;
  document.body.classList.toggle("offline", !online);
  $("#offline-banner").hidden = online;
  if (!online) pollServer();
  renderAll();
}

let polling = null;
function pollServer() {
  clearTimeout(polling);
  polling = setTimeout(async () => {
    try {
      await api.call("GET", "/api/info");
      setOnline(true);
      await loadList();
      if (state.current != null) await openConversation(state.current);
    } catch (_) {
      pollServer();
    }
  }, 2500);
}

// ── sidebar ───────────────────────────────────────────────────────────────────────────────

function renderList() {
  const nav = $("#conversations");
  const sorted = [...state.conversations].sort((a, b) => (b.updated_at || "").localeCompare(a.updated_at || ""));
  nav.replaceChildren(...sorted.map((c) => {
    const item = document.createElement("div");
    item.className = "conv-item" + (c.id === state.current ? " active" : "");
    item.dataset.id = c.id;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = c.title;
    title.title = c.title;
    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "rename";
    rename.title = "Rename";
    rename.textContent = "✎";
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.title = "Delete";
    del.textContent = "×";
    item.append(title, rename, del);
    return item;
  }));
}

async function loadList() {
  let data;
  try {
    data = await api.call("GET", "/api/conversations");
    cache.saveList(id.client, data);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return askToken();
    if (!(err instanceof OfflineError)) throw err;
    setOnline(false);
    data = (await cache.loadList(id.client)) || { active_id: null, conversations: [] };
  }
  state.conversations = data.conversations;
  if (state.current == null) state.current = data.active_id ?? null;
  renderList();
  renderAll();
}

async function switchTo(cid) {
  document.body.classList.remove("sidebar-open");
  if (cid === state.current) return;
  // switch the view first: from now on events of the old conversation are ignored
  state.current = cid;
  state.messages = [];
  state.hasMore = false;
  state.streaming = false;
  stopAnimations();
  hideThinking();
  renderList();
  renderAll();
  try {
    await api.call("POST", `/api/conversations/${cid}/switch`);
  } catch (err) {
    if (!(err instanceof OfflineError)) notice(err.message);
  }
  await openConversation(cid);
  estimate.soon($("#input").value);
}

async function openConversation(cid, before = null) {
  const seq = ++state.loadSeq;
  let data;
  try {
    const q = new URLSearchParams({ limit: "50" });
    if (before != null) q.set("before", before);
    data = await api.call("GET", `/api/conversations/${cid}/messages?${q}`);
  } catch (err) {
    if (!(err instanceof OfflineError)) { notice(err.message); return; }
    setOnline(false);
    if (before != null) return;
    data = { messages: (await cache.loadMessages(id.client, cid)) || [], has_more: false };
  }
  if (seq !== state.loadSeq || state.current !== cid) return; // the user moved on meanwhile
  const loaded = data.messages.map(toView);
  if (before != null) {
    state.messages = [...loaded, ...state.messages];
  } else {
    // keep what events already brought (a reply streaming right now is newer than storage)
    const live = state.messages.filter((m) => m.live);
    state.messages = loaded;
    for (const l of live) {
      const i = l.id != null ? state.messages.findIndex((m) => m.id === l.id && m.role === l.role) : -1;
      if (i >= 0) state.messages[i] = l;
      else if (!(l.role === "user" && loaded.slice(-3).some((m) => m.role === "user" && m.text === l.text))) {
        state.messages.push(l);
      }
    }
    const last = state.messages[state.messages.length - 1];
    state.streaming = !!last && last.role === "assistant" && last.status === "streaming" && state.online;
  }
  state.hasMore = !!data.has_more;
  renderAll();
  if (before == null) scrollToBottom();
  saveCurrent();
}

function saveCurrent() {
  if (state.current == null || !state.online) return;
  const plain = state.messages.map((m) => ({
    id: m.id, role: m.role, text: m.text, images: m.images, status: m.status,
  }));
  cache.saveMessages(id.client, state.current, plain);
}

// ── events ────────────────────────────────────────────────────────────────────────────────

function findLive(d) {
  return state.messages.find((m) => m.messageId && m.messageId === d.message_id) ||
    (d.reply_id != null ? state.messages.find((m) => m.role === "assistant" && m.id === d.reply_id) : undefined);
}

function liveMessage(d) {
  let m = findLive(d);
  if (!m) m = addMessage({ role: "assistant", text: "", status: "streaming", id: d.reply_id, live: true, animate: true });
  m.messageId = d.message_id;
  m.live = true;
  if (d.reply_id != null) m.id = d.reply_id;
  hideThinking();
  return m;
}

function commonPrefix(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

function onEvent(name, d) {
  if (name === "reset") {
    if (state.current != null) openConversation(state.current);
    return;
  }
  const mine = d.conversation_id == null || d.conversation_id === state.current;
  if (!mine) {
    if (name === "done" || name === "interrupted") loadList();
    return; // another conversation's text never enters this view
  }
  switch (name) {
    case "user":
      if (!state.messages.some((m) => m.cmid === d.client_message_id)) {
        addMessage({ role: "user", text: d.text, images: d.images, cmid: d.client_message_id, live: true });
      }
      break;
    case "thinking":
      state.streaming = true;
      showThinking();
      renderRegenerate();
      updateButtons();
      break;
    case "delta": {
      const m = liveMessage(d);
      m.text += d.text;
      m.status = "streaming";
      animate(m);
      break;
    }
    case "replace": {
      const m = liveMessage(d);
      m.shown = Math.min(m.shown, commonPrefix(m.text, d.text));
      m.text = d.text;
      animate(m);
      break;
    }
    case "cost":
      showCost(findLive(d), d);
      estimate.soon($("#input").value);
      break;
    case "done":
    case "interrupted": {
      const m = findLive(d);
      if (m) {
        m.status = name === "done" ? "complete" : "interrupted";
        animate(m);
      }
      hideThinking();
      state.streaming = false;
      renderRegenerate();
      updateButtons();
      saveCurrent();
      loadList();
      break;
    }
    case "error": {
      const m = findLive(d);
      if (m) { m.status = "failed"; animate(m); }
      hideThinking();
      state.streaming = false;
      updateButtons();
      saveCurrent();
      break;
    }
    case "image":
      hideThinking();
      addMessage({ role: "assistant", text: d.caption || "", images: [{ url: d.url }], id: d.reply_id, live: true });
      scrollToBottom();
      break;
    case "remove": {
      // a progress notice the image replaced: it leaves the page
      const i = state.messages.findIndex((m) => m.messageId && m.messageId === d.message_id);
      if (i >= 0) {
        const [gone] = state.messages.splice(i, 1);
        if (gone.node) gone.node.remove();
        renderRegenerate();
      }
      break;
    }
  }
}

// ── actions ───────────────────────────────────────────────────────────────────────────────

function newId() {
  const b = new Uint8Array(8);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function send() {
  const input = $("#input");
  const text = input.value;
  if (!text.trim() && !state.attachments.length) return;
  if (!state.online) return notice("You are offline; the message was not sent.");
  if (text.length > state.info.max_text) return notice("The message is too long.");
  notice("");
  try {
    if (state.current == null) {
      const conv = await api.call("POST", "/api/conversations", {});
      state.current = conv.id;
      state.conversations.push(conv);
      renderList();
    }
    const cmid = newId();
    const attachments = state.attachments;
    state.attachments = [];
    renderAttachments();
    input.value = "";
    autosize();
    addMessage({ role: "user", text, images: attachments.map((a) => ({ url: a.url, kind: a.kind })), cmid, live: true });
    state.streaming = true;
    showThinking();
    renderRegenerate();
    updateButtons();
    await api.call("POST", "/api/messages", {
      text, conversation_id: state.current, client_message_id: cmid, attachments: attachments.map((a) => a.uri),
    });
  } catch (err) {
    hideThinking();
    state.streaming = false;
    updateButtons();
    if (err instanceof OfflineError) setOnline(false);
    notice(err instanceof OfflineError ? "The server cannot be reached; the message was not sent." : err.message);
  }
}

async function stop() {
  try { await api.call("POST", "/api/stop"); } catch (err) { notice(err.message); }
}

async function regenerate() {
  const last = state.messages[state.messages.length - 1];
  if (last && last.role === "assistant") {
    state.messages.pop();
    last.node.remove();
  }
  state.streaming = true;
  showThinking();
  updateButtons();
  try {
    await api.call("POST", "/api/regenerate", { conversation_id: state.current });
  } catch (err) {
    hideThinking();
    state.streaming = false;
    updateButtons();
    notice(err.message);
  }
}

async function newChat() {
  try {
    const conv = await api.call("POST", "/api/conversations", {});
    state.conversations.push(conv);
    state.current = null;
    await switchTo(conv.id);
    $("#input").focus();
  } catch (err) {
    notice(err instanceof OfflineError ? "You are offline." : err.message);
  }
}

function startRename(item) {
  const cid = Number(item.dataset.id);
  const conv = state.conversations.find((c) => c.id === cid);
  const field = document.createElement("input");
  field.className = "rename-input";
  field.value = conv ? conv.title : "";
  item.querySelector(".title").replaceWith(field);
  field.focus();
  field.select();
  let done = false;
  const commit = async (save) => {
    if (done) return;
    done = true;
    if (save && field.value.trim()) {
      try { await api.call("PATCH", `/api/conversations/${cid}`, { title: field.value.trim() }); }
      catch (err) { notice(err.message); }
    }
    await loadList();
  };
  field.addEventListener("keydown", (e) => {
    if (e.key === "Enter") commit(true);
    if (e.key === "Escape") commit(false);
  });
  field.addEventListener("blur", () => commit(true));
}

async function remove(item) {
  const cid = Number(item.dataset.id);
  if (!confirm("Delete this conversation?")) return;
  try {
    await api.call("DELETE", `/api/conversations/${cid}`);
    cache.drop(id.client, cid);
    if (state.current === cid) {
      state.current = null;
      state.messages = [];
      state.streaming = false;
      hideThinking();
    }
    await loadList();
  } catch (err) {
    notice(err.message);
  }
}

// ── images ────────────────────────────────────────────────────────────────────────────────

async function attach(file) {
  const maxBytes = state.info.max_upload_mb * 1024 * 1024;
  notice("");
  let blob;
  if (isVideo(file)) {
    // sent as it is: the server checks it and samples its frames
    if (file.size > maxBytes) return notice(`That video is larger than ${state.info.max_upload_mb} MB.`);
    blob = file;
  } else {
    try {
      blob = await downscale(file, maxBytes);
    } catch (_) {
      return notice(`“${file.name}” is not an image or video I can read.`);
    }
    if (!blob || blob.size > maxBytes) {
      return notice(`That image is larger than ${state.info.max_upload_mb} MB, even after shrinking it.`);
    }
  }
  const box = $("#upload");
  box.hidden = false;
  $("#upload-bar").style.width = "0%";
  $("#upload-label").textContent = `Uploading ${file.name}…`;
  try {
    const ref = await api.upload(blob, file.name, (p) => {
      $("#upload-bar").style.width = `${Math.round(p * 100)}%`;
    });
    state.attachments.push(ref);
    renderAttachments();
  } catch (err) {
    notice(err.message);
  } finally {
    box.hidden = true;
  }
}

function renderAttachments() {
  $("#attachments").replaceChildren(...state.attachments.map((a, i) => {
    const chip = document.createElement("div");
    chip.className = "chip";
    const img = document.createElement(a.kind === "video" ? "video" : "img");
    img.src = a.url;
    if (a.kind === "video") img.muted = true;
    else img.alt = "attachment";
    const x = document.createElement("button");
    x.type = "button";
    x.textContent = "×";
    x.title = "Remove";
    x.addEventListener("click", () => { state.attachments.splice(i, 1); renderAttachments(); });
    chip.append(img, x);
    return chip;
  }));
}

// ── wiring ────────────────────────────────────────────────────────────────────────────────

function autosize() {
  const input = $("#input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

function askToken() {
  const form = $("#token-dialog");
  form.hidden = false;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken($("#token-input").value.trim());
    location.reload();
  }, { once: true });
}

function wire() {
  const input = $("#input");
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  input.addEventListener("input", () => { autosize(); updateButtons(); estimate.soon(input.value); });
  $("#send").addEventListener("click", send);
  $("#stop").addEventListener("click", stop);
  $("#new-chat").addEventListener("click", newChat);
  $("#menu").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  $("#scrim").addEventListener("click", () => document.body.classList.remove("sidebar-open"));
  $("#file").addEventListener("change", async (e) => {
    for (const file of [...e.target.files]) await attach(file);
    e.target.value = "";
  });
  $("#load-older").addEventListener("click", () => {
    const first = state.messages.find((m) => m.id != null);
    if (first && state.current != null) openConversation(state.current, first.id);
  });
  $("#conversations").addEventListener("click", (e) => {
    const item = e.target.closest(".conv-item");
    if (!item) return;
    if (e.target.closest(".rename")) return startRename(item);
    if (e.target.closest(".delete")) return remove(item);
    if (!e.target.closest(".rename-input")) switchTo(Number(item.dataset.id));
  });
  listEl.addEventListener("click", async (e) => {
    const btn = e.target.closest(".copy");
    if (!btn) return;
    const code = btn.closest(".code").querySelector("code").textContent;
    try {
      await navigator.clipboard.writeText(code);
    } catch (_) { // plain http on a LAN address has no clipboard API
      const area = document.createElement("textarea");
      area.value = code;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    btn.textContent = "Copied";
    setTimeout(() => { btn.textContent = "Copy"; }, 1500);
  });
}

async function boot() {
  wire();
  try {
    state.info = await api.call("GET", "/api/info");
  } catch (err) {
    if (err instanceof OfflineError) setOnline(false);
  }
  document.title = state.info.title;
  $("#brand").textContent = state.info.title;
  $("#input").placeholder = `Message ${state.info.title}`;
  await loadList();
  if (state.current != null) await openConversation(state.current);
  estimate.soon();
  api.events(EVENTS, onEvent, (up) => {
    if (up && !state.online) pollServer();
    if (!up) api.call("GET", "/api/info").catch(() => setOnline(false));
  });
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js").catch(() => { /* offline shell is optional */ });
  }
  document.body.dataset.ready = "1";
}

boot();
