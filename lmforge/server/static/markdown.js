// A small markdown subset for the chat page (fenced code, headings, lists, paragraphs, `code`, **bold**, *italic*),
// built as DOM nodes from text: no HTML is ever parsed, so a model that writes <script> shows the characters
// "<script>". Links are not made: a URL stays text.
"use strict";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const LIST_ITEM = /^\s*([-*+]|\d+[.)])\s+/;

function renderMarkdown(text, into) {
  into.replaceChildren();
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*```(.*)$/);
    if (fence) {
      const code = [];
      i += 1;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) code.push(lines[i++]);
      i += 1;
      const pre = el("pre");
      pre.append(el("code", null, code.join("\n")));
      into.append(pre);
    } else if (!line.trim()) {
      i += 1;
    } else if (/^#{1,6}\s/.test(line)) {
      const heading = el("p", "heading");
      inline(line.replace(/^#{1,6}\s+/, ""), heading);
      into.append(heading);
      i += 1;
    } else if (LIST_ITEM.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? "ol" : "ul");
      if (ordered) list.start = parseInt(line, 10) || 1;
      while (i < lines.length && LIST_ITEM.test(lines[i]) && /^\s*\d/.test(lines[i]) === ordered) {
        const item = el("li");
        inline(lines[i].replace(LIST_ITEM, ""), item);
        list.append(item);
        i += 1;
      }
      into.append(list);
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^\s*```/.test(lines[i]) && !/^#{1,6}\s/.test(lines[i]) &&
             !LIST_ITEM.test(lines[i])) para.push(lines[i++]);
      const p = el("p");
      inline(para.join("\n"), p);
      into.append(p);
    }
  }
}

function inline(text, into) {
  const pattern = /`([^`\n]+)`|\*\*([^*\n]+)\*\*|\*([^*\s][^*\n]*)\*/g;
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (m.index > last) into.append(text.slice(last, m.index)); // a string argument becomes a text node
    if (m[1] !== undefined) into.append(el("code", null, m[1]));
    else if (m[2] !== undefined) into.append(el("strong", null, m[2]));
    else into.append(el("em", null, m[3]));
    last = m.index + m[0].length;
  }
  if (last < text.length) into.append(text.slice(last));
}

