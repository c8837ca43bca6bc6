// A small, safe Markdown renderer for model and user text.
//
// Safety by construction: text only ever reaches the page through document.createTextNode /
// textContent, and elements are created from a fixed whitelist (p, br, strong, em, code, pre,
// a, ul, ol, li, h1-h6, blockquote, hr). There is no innerHTML anywhere, so "<script>" in a
// message is just characters. Links are http(s) only and open with rel="noopener noreferrer".
//
// Supported: fenced code blocks (with a copy button; unclosed fences render as code while a
// reply streams), inline code, **bold**, *italic* / _italic_, [links](https://…), bare
// https:// links, "-"/"*"/"1." lists, "#" headings, "> " quotes and "---" rules.

const INLINE = new RegExp(
  [
    "`([^`\\n]+)`",                                  // 1 inline code
    "\\*\\*(?=\\S)([^\\n]*?\\S)\\*\\*",             // 2 bold
    "__(?=\\S)([^\\n]*?\\S)__",                      // 3 bold
    "\\*(?=[^\\s*])([^*\\n]*?[^\\s*])\\*",          // 4 italic
    "(?<![\\p{L}\\p{N}_])_(?=\\S)([^_\\n]*?\\S)_(?![\\p{L}\\p{N}_])", // 5 italic, not snake_case
    "\\[([^\\]\\n]+)\\]\\(([^)\\s]+)\\)",           // 6,7 link
    "(https?:\\/\\/[^\\s<>()\\[\\]]*[^\\s<>()\\[\\].,;:!?'\"])", // 8 bare link
  ].join("|"),
  "gu",
);

/** The URL if it is a safe http(s) link, else null. */
export function safeUrl(raw) {
  try {
    const url = new URL(raw, "https://invalid.invalid/");
    if ((url.protocol === "http:" || url.protocol === "https:") && /^https?:\/\//i.test(raw)) {
      return url.href;
    }
  } catch (_) { /* not a URL */ }
  return null;
}

function el(tag, cls) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  return node;
}

function link(text, href, literal) {
  const url = safeUrl(href);
  if (!url) return document.createTextNode(literal); // e.g. javascript: links stay plain text
  const a = el("a");
  a.href = url;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.textContent = text;
  return a;
}

/** Append the inline Markdown of `text` to `parent`. */
export function renderInline(text, parent, depth = 0) {
  let last = 0;
  INLINE.lastIndex = 0;
  const matches = [...text.matchAll(INLINE)];
  for (const m of matches) {
    if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[1] !== undefined) {
      const code = el("code");
      code.textContent = m[1];
      parent.appendChild(code);
    } else if ((m[2] ?? m[3]) !== undefined) {
      const strong = el("strong");
      depth < 4 ? renderInline(m[2] ?? m[3], strong, depth + 1) : (strong.textContent = m[2] ?? m[3]);
      parent.appendChild(strong);
    } else if ((m[4] ?? m[5]) !== undefined) {
      const em = el("em");
      depth < 4 ? renderInline(m[4] ?? m[5], em, depth + 1) : (em.textContent = m[4] ?? m[5]);
      parent.appendChild(em);
    } else if (m[6] !== undefined) {
      parent.appendChild(link(m[6], m[7], m[0]));
    } else if (m[8] !== undefined) {
      parent.appendChild(link(m[8], m[8], m[0]));
    }
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}

function codeBlock(lang, lines) {
  const box = el("div", "code");
  const head = el("div", "code-head");
  const label = el("span", "code-lang");
  label.textContent = lang || "code";
  const copy = el("button", "copy");
  copy.type = "button";
  copy.textContent = "Copy";
  head.append(label, copy);
  const pre = el("pre");
  const code = el("code");
  code.textContent = lines.join("\n");
  pre.appendChild(code);
  box.append(head, pre);
  return box;
}

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s{0,6}[-*+]\s+(.*)$/;
const ORDERED = /^\s{0,6}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

/** Render `text` as Markdown into a new DocumentFragment. */
export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let para = null;
  let list = null;
  const endPara = () => { para = null; };
  const endList = () => { list = null; };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      endPara(); endList();
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !(lines[i].trim().startsWith(fence[0].repeat(fence.length)) &&
             lines[i].trim().replace(new RegExp(`^\\${fence[0]}+`), "") === "")) {
        body.push(lines[i]);
        i++;
      }
      out.appendChild(codeBlock(m[2], body));
      continue;
    }
    if (!line.trim()) { endPara(); endList(); continue; }
    if (RULE.test(line)) { endPara(); endList(); out.appendChild(el("hr")); continue; }
    if ((m = HEADING.exec(line))) {
      endPara(); endList();
      const h = el(`h${m[1].length}`);
      renderInline(m[2], h);
      out.appendChild(h);
      continue;
    }
    const bullet = BULLET.exec(line);
    const ordered = bullet ? null : ORDERED.exec(line);
    if (bullet || ordered) {
      endPara();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        if (ordered && ordered[1] !== "1") list.start = Number(ordered[1]);
        out.appendChild(list);
      }
      const li = el("li");
      renderInline(bullet ? bullet[1] : ordered[2], li);
      list.appendChild(li);
      continue;
    }
    if ((m = QUOTE.exec(line))) {
      endPara(); endList();
      let quote = out.lastChild;
      if (!quote || quote.tagName !== "BLOCKQUOTE" || lines[i - 1] === undefined || !QUOTE.test(lines[i - 1])) {
        quote = el("blockquote");
        out.appendChild(quote);
      } else {
        quote.appendChild(el("br"));
      }
      renderInline(m[1], quote);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) { // continuation of a list item
      list.lastChild.appendChild(document.createTextNode(" "));
      renderInline(line.trim(), list.lastChild);
      continue;
    }
    endList();
    if (!para) {
      para = el("p");
      out.appendChild(para);
    } else {
      para.appendChild(el("br"));
    }
    renderInline(line, para);
  }
  return out;
}
