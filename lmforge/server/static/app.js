// The lmforge chat page: conversations kept in this browser (localStorage), answers streamed from
// /v1/chat/completions (api.js), a stop button that aborts the request, regenerate / edit, tokens/s, and the
// engine's figures from /stats. Whatever the user or the model writes is inserted as text nodes only (textContent,
// never as markup): markdown.js builds elements, it never parses HTML. Loaded after api.js, markdown.js, settings.js.
"use strict";

const $ = (id) => document.getElementById(id);
const KEYS = { conversations: "lmforge.conversations", current: "lmforge.current" };
let conversations = loadConversations();
let currentId = localStorage.getItem(KEYS.current);
let modelName = null;
let running = null; // { controller, conv, reply, body } while an answer streams
let statsTimer = null;
let lastStats = null;
let pendingImage = null; // { name, url }: the image (a data: URL) the next message takes
const MAX_IMAGE_BYTES = 8 * 1024 * 1024; // the server's limit for one image

// -- storage ------------------------------------------------------------------------------------------------
function readJSON(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function loadConversations() {
  const stored = readJSON(KEYS.conversations, []);
  if (!Array.isArray(stored)) return [];
  return stored.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages)).map((c) => ({
    id: c.id, title: String(c.title || ""), updated: Number(c.updated) || 0,
    messages: c.messages.filter((m) => m && (m.role === "user" || m.role === "assistant"))
      .map((m) => ({ role: m.role, content: String(m.content ?? ""), meta: String(m.meta ?? "") })),
  }));
}

function save() {
  try { // images are not kept (localStorage holds a few MB): after a reload a message keeps its text only
    localStorage.setItem(KEYS.conversations, JSON.stringify(conversations, (k, v) => (k === "image" ? undefined : v)));
    if (currentId) localStorage.setItem(KEYS.current, currentId);
    else localStorage.removeItem(KEYS.current);
  } catch (err) {
    showError(`cannot save the conversations in this browser (${err.name}): delete old chats`);
  }
}

// -- the server -----------------------------------------------------------------------------------------------
async function connect() {
  try {
    const response = await fetch("/v1/models", { headers: headers(false) });
    if (!response.ok) throw await errorOf(response);
    const body = await response.json();
    modelName = body.data[0].id;
    $("model-name").textContent = modelName;
    $("key-panel").hidden = true;
    hideError();
    if (!running) render(); // the answers are signed with the model's name
    pollStats();
    return true;
  } catch (err) {
    modelName = null;
    handleError(err);
    return false;
  }
}

function handleError(err) {
  if (err instanceof ApiError && err.status === 401) {
    $("model-name").textContent = "API key needed";
    $("key-error").textContent = apiKey()
      ? `The server refused this API key (401 ${err.code || "unauthorized"}). Check it and enter it again.`
      : "This server needs an API key: enter it to chat (401 without one).";
    $("key-panel").hidden = false;
    $("key-input").focus();
    return;
  }
  showError(err instanceof ApiError ? `error ${err.status || ""}: ${err.message}`
    : `cannot reach the server: ${err.message}`);
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function pollStats() {
  clearTimeout(statsTimer);
  if (!document.hidden && modelName) {
    try {
      const response = await fetch("/stats", { headers: headers(false) });
      if (response.ok) showStats(await response.json());
    } catch {
      // the server is gone for now: the next poll tries again
    }
  }
  statsTimer = setTimeout(pollStats, running ? 1000 : 3000);
}

function showStats(s) {
  const now = performance.now();
  let rate = "";
  if (lastStats && s.generated_tokens_total > lastStats.generated) {
    rate = ` · ${((s.generated_tokens_total - lastStats.generated) / ((now - lastStats.at) / 1000)).toFixed(1)} tok/s`;
  }
  lastStats = { at: now, generated: s.generated_tokens_total };
  const box = $("engine-stats");
  box.textContent = `engine: KV blocks ${s.kv_blocks_in_use}/${s.kv_blocks_total} in use · ` +
    `${s.requests_running} running · ${s.requests_waiting} waiting${rate}`;
  box.dataset.kvInUse = String(s.kv_blocks_in_use);
  box.dataset.kvTotal = String(s.kv_blocks_total);
}

// -- asking ---------------------------------------------------------------------------------------------------
function requestBody(conv) {
  const messages = [];
  if (settings.system.trim()) messages.push({ role: "system", content: settings.system });
  for (const m of conv.messages) {
    if (!m.content) continue;
    messages.push({ role: m.role, content: m.image ? [{ type: "image_url", image_url: { url: m.image } },
      { type: "text", text: m.content }] : m.content });
  }
  const body = { model: modelName, messages, stream: true, stream_options: { include_usage: true },
                 temperature: settings.temperature, top_p: settings.top_p,
                 repetition_penalty: settings.repetition_penalty };
  if (settings.top_k > 0) body.top_k = settings.top_k;
  if (settings.max_tokens !== "") body.max_tokens = Math.max(1, Number(settings.max_tokens));
  if (settings.seed !== "") body.seed = Number(settings.seed);
  return body;
}

async function answer(conv) {
  if (!modelName && !(await connect())) {
    save();
    render(); // the question stays, with Retry
    return;
  }
  hideError();
  const reply = { role: "assistant", content: "", meta: "" };
  conv.messages.push(reply);
  conv.updated = Date.now();
  const controller = new AbortController();
  running = { controller, conv, reply, body: null };
  render();
  setRunning(true);
  const t0 = performance.now();
  let tFirst = null;
  let chunks = 0;
  let usage = null;
  let finish = null;
  let stopped = false;
  let failed = null;
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(true),
      body: JSON.stringify(requestBody(conv)), signal: controller.signal });
    if (!response.ok) throw await errorOf(response);
    await readEvents(response, (event) => {
      if (event.error) throw new ApiError(0, event.error.message, event.error.code);
      if (event.usage) usage = event.usage;
      for (const choice of event.choices || []) {
        const text = choice.delta && choice.delta.content;
        if (text) {
          if (tFirst === null) tFirst = performance.now();
          chunks += 1;
          reply.content += text;
          drawSoon();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
  } catch (err) {
    if (err.name === "AbortError") stopped = true;
    else failed = err;
  }
  const tokens = usage ? usage.completion_tokens : chunks;
  reply.meta = figures(tokens, t0, tFirst, performance.now(), stopped ? "stopped" : finish);
  if (!reply.content) conv.messages.pop(); // nothing came: keep the question, offer Retry
  running = null;
  setRunning(false);
  save();
  render();
  if (failed) handleError(failed);
  clearTimeout(statsTimer);
  statsTimer = setTimeout(pollStats, 300); // soon, so a stopped request's freed KV blocks show
}

function figures(tokens, t0, tFirst, tEnd, finish) {
  const notes = { stopped: " · stopped", length: " · cut at max tokens" };
  if (!tokens || tFirst === null) return finish === "stopped" ? "stopped" : "";
  const decode = (tEnd - tFirst) / 1000; // after the first token: the decode rate, without the prompt's prefill
  const rate = tokens > 1 && decode >= 0.05 ? (tokens - 1) / decode : tokens / Math.max((tEnd - t0) / 1000, 0.001);
  return `${tokens} tokens · ${rate.toFixed(1)} tok/s · first token ${((tFirst - t0) / 1000).toFixed(2)} s` +
    (notes[finish] || "");
}

function submit() {
  const text = $("prompt").value;
  if (running || !text.trim()) return;
  let conv = currentConversation();
  if (!conv) {
    conv = { id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`, title: "", updated: 0,
             messages: [] };
    conversations.push(conv);
    currentId = conv.id;
  }
  if (!conv.title) conv.title = text.trim().slice(0, 60);
  conv.messages.push({ role: "user", content: text, meta: "", image: pendingImage ? pendingImage.url : undefined });
  $("prompt").value = "";
  attach(null);
  answer(conv);
}

function regenerate(conv) {
  if (conv.messages.at(-1).role === "assistant") conv.messages.pop();
  answer(conv);
}

function editLast(conv) {
  let index = conv.messages.length - 1;
  while (index >= 0 && conv.messages[index].role !== "user") index -= 1;
  if (index < 0) return;
  $("prompt").value = conv.messages[index].content;
  attach(conv.messages[index].image ? { name: "image", url: conv.messages[index].image } : null);
  conv.messages.splice(index);
  save();
  render();
  $("prompt").focus();
}

// -- drawing --------------------------------------------------------------------------------------------------
function currentConversation() {
  return conversations.find((c) => c.id === currentId) || null;
}

function render() {
  renderList();
  renderMessages();
}

function renderList() {
  const nav = $("conversations");
  nav.replaceChildren();
  for (const conv of [...conversations].sort((a, b) => b.updated - a.updated)) {
    const item = el("button", conv.id === currentId ? "conv active" : "conv", conv.title || "New chat");
    item.type = "button";
    item.title = conv.title;
    item.addEventListener("click", () => {
      if (running) return;
      currentId = conv.id;
      save();
      render();
      closeSidebar();
    });
    nav.append(item);
  }
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  const conv = currentConversation();
  if (!conv || !conv.messages.length) {
    box.append(el("p", "empty muted", "Ask anything. Conversations stay in this browser; nothing is sent " +
      "anywhere but this server."));
    return;
  }
  const lastUser = conv.messages.map((m) => m.role).lastIndexOf("user");
  conv.messages.forEach((m, index) => {
    const view = el("div", `msg ${m.role}`);
    view.append(el("div", "role", m.role === "user" ? "you" : modelName || "assistant"));
    const body = el("div", "body");
    if (m.role === "assistant") renderMarkdown(m.content, body);
    else body.textContent = m.content;
    if (m.image) {
      const picture = document.createElement("img");
      picture.alt = "attached image";
      picture.src = m.image; // a data: URL (the page's CSP allows img-src data:)
      body.prepend(picture);
    }
    view.append(body);
    if (running && m === running.reply) {
      running.body = body;
      view.classList.add("streaming");
    }
    const meta = el("div", "meta");
    if (m.meta) meta.append(el("span", "figures", m.meta));
    if (!running && index === conv.messages.length - 1 && m.role === "assistant") {
      meta.append(action("Regenerate", () => regenerate(conv)));
    }
    if (!running && index === lastUser) {
      meta.append(action("Edit", () => editLast(conv)));
      if (index === conv.messages.length - 1) meta.append(action("Retry", () => answer(conv)));
    }
    if (meta.childNodes.length) view.append(meta);
    box.append(view);
  });
  box.scrollTop = box.scrollHeight;
}

function action(label, onClick) {
  const button = el("button", "action", label);
  button.type = "button";
  button.addEventListener("click", onClick);
  return button;
}

let drawPending = false;
function drawSoon() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    if (!running || !running.body) return;
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    renderMarkdown(running.reply.content, running.body);
    if (atBottom) box.scrollTop = box.scrollHeight;
  });
}

function setRunning(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  document.body.dataset.state = on ? "streaming" : "idle";
}

function attach(image) {
  pendingImage = image;
  $("attached").hidden = !image;
  $("attached").textContent = image ? `${image.name} \u00d7` : "";
}

function readImage() {
  const file = $("attach").files[0];
  $("attach").value = "";
  if (!file) return;
  if (file.size > MAX_IMAGE_BYTES) {
    showError(`${file.name} is larger than the server's limit of 8 MB`);
    return;
  }
  const reader = new FileReader();
  reader.addEventListener("load", () => attach({ name: file.name, url: String(reader.result) }));
  reader.readAsDataURL(file);
}

// -- sidebar and wiring ---------------------------------------------------------------------------------------
function openSidebar() {
  $("sidebar").classList.add("open");
  $("backdrop").hidden = false;
}

function closeSidebar() {
  $("sidebar").classList.remove("open");
  $("backdrop").hidden = true;
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  $("stop").addEventListener("click", () => running && running.controller.abort());
  $("attach").addEventListener("change", readImage);
  $("attached").addEventListener("click", () => attach(null));
  $("new-chat").addEventListener("click", () => {
    if (running) return;
    currentId = null;
    save();
    render();
    closeSidebar();
    $("prompt").focus();
  });
  $("toggle-settings").addEventListener("click", () => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
  });
  $("forget-key").addEventListener("click", () => {
    forgetApiKey();
    connect();
  });
  $("delete-chat").addEventListener("click", () => {
    const conv = currentConversation();
    if (!conv || running || !window.confirm(`Delete "${conv.title || "this chat"}"?`)) return;
    conversations = conversations.filter((c) => c !== conv);
    currentId = null;
    save();
    render();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    setApiKey(key, $("key-remember").checked);
    $("key-input").value = "";
    connect();
  });
  $("open-sidebar").addEventListener("click", openSidebar);
  $("close-sidebar").addEventListener("click", closeSidebar);
  $("backdrop").addEventListener("click", closeSidebar);
  document.addEventListener("visibilitychange", () => document.hidden || pollStats());
}

wire();
wireSettings();
setRunning(false);
render();
connect();
