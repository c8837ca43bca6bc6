// Message views: how one message is drawn, and the typewriter that reveals streamed text.
//
// Each assistant message has its full `text` and how much of it is `shown`. Every animation
// frame reveals a share of the backlog (at least 2 characters), so a burst of deltas drains
// smoothly in a few hundred ms instead of appearing at once, and a slow stream still flows.

import { renderMarkdown } from "./markdown.js";

const animating = new Set();
let ticking = false;

export function animate(m) {
  animating.add(m);
  if (!ticking) {
    ticking = true;
    requestAnimationFrame(tick);
  }
}

function tick() {
  const stick = nearBottom();
  for (const m of animating) {
    const backlog = m.text.length - m.shown;
    if (backlog > 0) {
      let next = m.shown + Math.max(2, Math.ceil(backlog / 10));
      if (backlog > 20000) next = m.text.length - 2000; // far behind (hidden tab): skip ahead
      next = Math.min(m.text.length, next);
      const code = m.text.charCodeAt(next - 1);
      if (code >= 0xd800 && code <= 0xdbff) next += 1; // never split a surrogate pair
      m.shown = next;
    }
    renderBody(m);
    if (m.shown >= m.text.length) animating.delete(m);
  }
  if (stick) scrollToBottom();
  if (animating.size) requestAnimationFrame(tick);
  else ticking = false;
}

// ── rendering ─────────────────────────────────────────────────────────────────────────────

export function nearBottom() {
  const box = document.querySelector("#messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

export function scrollToBottom() {
  const box = document.querySelector("#messages");
  box.scrollTop = box.scrollHeight;
}

function messageNode(m) {
  const node = document.createElement("article");
  node.className = `msg ${m.role}`;
  const body = document.createElement("div");
  body.className = "body";
  node.appendChild(body);
  m.node = node;
  m.body = body;
  return node;
}

export function renderBody(m) {
  const node = m.node || messageNode(m);
  node.dataset.status = m.status || "complete";
  node.dataset.role = m.role;
  if (m.id != null) node.dataset.id = m.id;
  const body = m.body;
  const frag = document.createDocumentFragment();
  for (const img of m.images || []) {
    if (!img.url || !(img.url.startsWith("/media/") || img.url.startsWith("https://"))) continue;
    const video = img.kind === "video";
    const el = document.createElement(video ? "video" : "img");
    el.className = "image";
    el.src = img.url;
    if (video) {
      el.controls = true;
      el.preload = "metadata";
    } else {
      el.alt = "image";
      el.loading = "lazy";
    }
    frag.appendChild(el);
  }
  const shown = m.role === "assistant" ? m.text.slice(0, m.shown) : m.text;
  if (m.role === "assistant") {
    const text = document.createElement("div");
    text.className = "text";
    text.appendChild(renderMarkdown(shown));
    frag.appendChild(text);
  } else if (shown) {
    const text = document.createElement("div");
    text.className = "text plain";
    text.textContent = shown; // user text is shown as typed, never parsed as HTML
    frag.appendChild(text);
  }
  const caughtUp = m.shown >= m.text.length;
  if (m.status === "interrupted" && caughtUp) {
    const mark = document.createElement("div");
    mark.className = "interrupted-marker";
    mark.textContent = "⏹ interrupted";
    frag.appendChild(mark);
  }
  if (m.status === "failed" && caughtUp) node.classList.add("failed");
  node.dataset.typing = caughtUp ? "0" : "1";
  if (m.role === "assistant" && (m.status === "streaming" || !caughtUp)) {
    const cursor = document.createElement("span");
    cursor.className = "cursor";
    frag.appendChild(cursor);
  }
  body.replaceChildren(frag);
}

export function toView(raw) {
  const m = {
    role: raw.role, text: raw.text || "", images: raw.images || [], status: raw.status || "complete",
    id: raw.id ?? null, messageId: raw.messageId ?? null, cmid: raw.cmid ?? null, live: !!raw.live,
  };
  m.shown = raw.role === "assistant" && raw.animate ? 0 : m.text.length;
  return m;
}


/** Stop animating everything (the view is about to show another conversation). */
export function stopAnimations() {
  animating.clear();
}
