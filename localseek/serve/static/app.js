// The chat page: one conversation at a time, streamed from /v1/chat/completions; the reasoning in a dimmed block that
// folds when the answer starts; the answer as Markdown (raw HTML escaped, images off) with highlighted code.
import { ApiError, DeltaSplitter, getJSON, onKeyNeeded, streamChat } from "./api.js";
import {
  fromSaveJSON, loadConversations, loadSettings, newConversation, saveConversations, saveSettings, titleFor,
  toSaveJSON,
} from "./store.js";

const $ = (id) => document.getElementById(id);
const el = {
  menu: $("menu"), side: $("side"), model: $("model"), modelInfo: $("model-info"), newChat: $("new-chat"),
  temperature: $("temperature"), maxTokens: $("max-tokens"), thinking: $("thinking"), budget: $("budget"),
  budgetField: $("budget-field"), chats: $("chats"), exportButton: $("export"), importInput: $("import"),
  deleteButton: $("delete-chat"), messages: $("messages"), composer: $("composer"), prompt: $("prompt"),
  send: $("send"), stop: $("stop"), status: $("status"), keyDialog: $("key-dialog"), keyForm: $("key-form"),
  keyInput: $("key"), keyNote: $("key-note"),
};

const state = {
  conversations: loadConversations(),
  current: null,
  models: [],
  settings: loadSettings(),
  controller: null, // the AbortController of the reply streaming now
  streaming: null, // { conversation, message, view }
};

// -- Markdown ---------------------------------------------------------------------------------------------------
const md = window.markdownit({
  html: false, // raw HTML in model output is shown as text, never parsed
  linkify: true,
  highlight(code, lang) {
    const known = lang && window.hljs.getLanguage(lang);
    const body = known ? window.hljs.highlight(code, { language: lang, ignoreIllegals: true }).value
      : md.utils.escapeHtml(code);
    const cls = known ? ` class="hljs language-${md.utils.escapeHtml(lang)}"` : "";
    return `<pre><code${cls}>${body}</code></pre>`;
  },
});
md.disable("image"); // a model's image link would make the browser fetch any address
const defaultLink = md.renderer.rules.link_open ?? ((tokens, i, options, env, self) => self.renderToken(tokens, i, options));
md.renderer.rules.link_open = (tokens, i, options, env, self) => {
  tokens[i].attrSet("target", "_blank");
  tokens[i].attrSet("rel", "noopener noreferrer nofollow");
  return defaultLink(tokens, i, options, env, self);
};

// -- small helpers ----------------------------------------------------------------------------------------------
function node(tag, className, text) {
  const n = document.createElement(tag);
  if (className) n.className = className;
  if (text !== undefined) n.textContent = text;
  return n;
}

function size(bytes) {
  if (!bytes) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let n = bytes;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function seconds(s) {
  return s < 10 ? s.toFixed(1) : String(Math.round(s));
}

function thoughtLabel(stats, stopped) {
  const tokens = stats.reasoning_tokens_exact ? `${stats.reasoning_tokens} tokens`
    : `~${stats.reasoning_tokens} tokens`;
  const head = stopped ? "Stopped while thinking after" : "Thought for";
  return `${head} ${seconds(stats.thought_s ?? 0)} s · ${tokens}`;
}

function currentConversation() {
  return state.conversations.find((c) => c.id === state.current);
}

function persist() {
  saveConversations(state.conversations);
}

function nearBottom() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollDown(force) {
  if (force || nearBottom()) el.messages.scrollTop = el.messages.scrollHeight;
}

// -- the API key ------------------------------------------------------------------------------------------------
onKeyNeeded((refused) => new Promise((resolve) => {
  el.keyNote.classList.toggle("refused", refused);
  if (refused) el.keyNote.textContent = "That key was refused. Type the key given to localseek serve --api-key.";
  el.keyInput.value = "";
  const done = (event) => {
    event.preventDefault();
    const key = el.keyInput.value.trim();
    if (!key) return;
    el.keyForm.removeEventListener("submit", done);
    el.keyDialog.close();
    resolve(key);
  };
  el.keyForm.addEventListener("submit", done);
  if (!el.keyDialog.open) el.keyDialog.showModal();
  el.keyInput.focus();
}));
el.keyDialog.addEventListener("cancel", (event) => event.preventDefault()); // nothing works without the key

// -- models ------------------------------------------------------------------------------------------------------
function fitText(m) {
  if (m.loaded) return "loaded";
  if (m.fits_beside_loaded) return "fits";
  if (m.fits) return "fits (unloads an idle model first)";
  return "does not fit";
}

function describeModel(m) {
  if (!m) return "No models: start the server with one (localseek serve MODEL), or pull one (localseek pull).";
  const needs = `needs ${size(m.ram_bytes)} RAM` + (m.vram_bytes ? ` + ${size(m.vram_bytes)} VRAM` : "");
  const parts = [m.id, needs];
  if (m.n_ctx) parts.push(`context ${m.n_ctx}`);
  if (m.quant) parts.push(m.quant);
  if (m.thinking) parts.push("reasons");
  parts.push(fitText(m) + (m.problem && !m.fits ? `: ${m.problem}` : ""));
  return parts.join(" · ");
}

function selectedModel() {
  return state.models.find((m) => m.id === el.model.value);
}

async function loadModels() {
  let data;
  try {
    data = await getJSON("/localseek/models");
  } catch (err) {
    el.modelInfo.textContent = `Could not list models: ${err.message}`;
    return;
  }
  state.models = data.data;
  const wanted = el.model.value || state.settings.model;
  el.model.replaceChildren(...state.models.map((m) => {
    const option = node("option", "", `${m.id} — ${size(m.size_bytes)} · ${fitText(m)}`);
    option.value = m.id;
    return option;
  }));
  if (!state.models.length) el.model.append(node("option", "", "no models"));
  if (state.models.some((m) => m.id === wanted)) el.model.value = wanted;
  el.modelInfo.textContent = describeModel(selectedModel());
}

// -- settings ------------------------------------------------------------------------------------------------------
function restoreSettings() {
  const s = state.settings;
  el.temperature.value = s.temperature ?? "";
  el.maxTokens.value = s.max_tokens ?? "";
  el.thinking.value = s.thinking ?? "default";
  el.budget.value = s.budget ?? 1024;
  el.budgetField.hidden = el.thinking.value !== "budget";
}

function storeSettings() {
  state.settings = {
    model: el.model.value || state.settings.model, temperature: el.temperature.value, max_tokens: el.maxTokens.value,
    thinking: el.thinking.value, budget: el.budget.value,
  };
  el.budgetField.hidden = el.thinking.value !== "budget";
  saveSettings(state.settings);
}

function requestBody(conversation, model) {
  const messages = [];
  if (conversation.system) messages.push({ role: "system", content: conversation.system });
  for (const m of conversation.messages) {
    if (m === state.streaming?.message) continue;
    if (m.role === "user" || (m.role === "assistant" && m.content)) messages.push({ role: m.role, content: m.content });
  }
  const body = { model, messages, stream: true, stream_options: { include_usage: true } };
  const temperature = parseFloat(el.temperature.value);
  if (Number.isFinite(temperature)) body.temperature = Math.min(2, Math.max(0, temperature));
  const maxTokens = parseInt(el.maxTokens.value, 10);
  if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
  const thinking = el.thinking.value;
  if (thinking === "on") body.thinking = true;
  if (thinking === "off") body.thinking = false;
  if (thinking === "budget") {
    body.thinking = true;
    body.max_reasoning_tokens = Math.max(0, parseInt(el.budget.value, 10) || 0);
  }
  return body;
}

// -- drawing messages ------------------------------------------------------------------------------------------------
function userView(message) {
  const article = node("article", "msg user");
  article.setAttribute("aria-label", "You");
  article.append(node("div", "bubble", message.content));
  return article;
}

/** The DOM of an assistant reply, with methods to update it while it streams. */
function assistantView(message) {
  const article = node("article", "msg assistant");
  article.setAttribute("aria-label", "Assistant");
  const details = node("details", "thinking");
  const summary = node("summary", "", "Thinking…");
  const reasoning = node("div", "reasoning");
  details.append(summary, reasoning);
  details.hidden = true;
  const answer = node("div", "answer");
  const meta = node("div", "meta");
  article.append(details, answer, meta);
  let frame = 0;
  const draw = () => {
    frame = 0;
    const stick = nearBottom(); // follow the reply unless the reader scrolled up
    if (message.reasoning) {
      details.hidden = false;
      reasoning.textContent = message.reasoning;
    }
    answer.innerHTML = md.render(message.content); // markdown-it escapes any HTML the model wrote
    if (stick) scrollDown(true);
  };
  const view = {
    article,
    update() {
      if (!frame) frame = requestAnimationFrame(draw);
    },
    flush() {
      if (frame) cancelAnimationFrame(frame);
      draw();
      view.finish();
    },
    startThinking() {
      details.hidden = false;
      details.open = true;
    },
    fold(stats) {
      details.open = false;
      summary.textContent = thoughtLabel(stats, false);
    },
    finish() {
      const stats = message.stats ?? {};
      if (message.reasoning && stats.thought_s !== undefined) {
        summary.textContent = thoughtLabel(stats, message.interrupted && !message.content);
      } else if (message.reasoning) {
        summary.textContent = "Thought";
      }
      meta.replaceChildren();
      const bits = [];
      if (message.model) bits.push(message.model);
      if (stats.finish === "length") bits.push("cut at the token limit");
      meta.append(bits.join(" · "));
      if (message.interrupted) {
        meta.append(bits.length ? " · " : "", node("span", "stopped", "stopped"));
      }
      if (message.error) {
        const error = node("p", "error", `Error: ${message.error}`);
        error.setAttribute("role", "alert");
        meta.append(error);
      }
    },
  };
  return view;
}

function drawConversation() {
  const conversation = currentConversation();
  el.messages.replaceChildren();
  for (const message of conversation?.messages ?? []) {
    if (message.role === "user") {
      el.messages.append(userView(message));
    } else {
      const view = assistantView(message);
      el.messages.append(view.article);
      view.flush();
      if (message === state.streaming?.message) state.streaming.view = view;
    }
  }
  const last = [...(conversation?.messages ?? [])].reverse().find((m) => m.stats?.n_ctx);
  el.status.textContent = last ? statusText(last.model, last.stats) : "";
  scrollDown(true);
}

function drawChats() {
  const items = [...state.conversations].filter((c) => c.messages.length || c.id === state.current)
    .sort((a, b) => b.updated - a.updated)
    .map((c) => {
      const item = node("li");
      const button = node("button", "", c.title);
      button.type = "button";
      if (c.id === state.current) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => {
        if (state.controller) return;
        state.current = c.id;
        drawChats();
        drawConversation();
        document.body.classList.remove("side-open");
        el.menu.setAttribute("aria-expanded", "false");
      });
      item.append(button);
      return item;
    });
  el.chats.replaceChildren(...items);
}

function statusText(model, s) {
  const parts = [model];
  if (s.ttft_s !== undefined) parts.push(`first token ${s.ttft_s.toFixed(2)} s`);
  if (s.tokens_per_s) parts.push(`${s.tokens_per_s.toFixed(1)} tokens/s`);
  if (s.n_ctx && s.context_used) {
    parts.push(`context ${s.context_used} / ${s.n_ctx} (${Math.round((100 * s.context_used) / s.n_ctx)} %)`);
  } else if (s.context_used) {
    parts.push(`context ${s.context_used} tokens`);
  }
  return parts.join(" · ");
}

// -- sending and streaming ------------------------------------------------------------------------------------------
function setStreaming(on) {
  el.send.hidden = on;
  el.stop.hidden = !on;
  el.messages.setAttribute("aria-busy", String(on));
  for (const control of [el.newChat, el.deleteButton, el.importInput]) control.disabled = on;
}

async function send(text) {
  const model = el.model.value;
  if (!model || !state.models.length) {
    el.status.textContent = "Choose a model first.";
    return;
  }
  let conversation = currentConversation();
  if (!conversation) {
    conversation = newConversation();
    state.conversations.push(conversation);
    state.current = conversation.id;
  }
  if (!conversation.messages.length) conversation.title = titleFor(text);
  conversation.messages.push({ role: "user", content: text });
  const message = { role: "assistant", content: "", reasoning: "", model, stats: {} };
  conversation.messages.push(message);
  conversation.updated = Date.now();
  persist();
  el.messages.append(userView({ content: text }));
  const view = assistantView(message);
  el.messages.append(view.article);
  scrollDown(true);
  drawChats();

  const controller = new AbortController();
  state.controller = controller;
  state.streaming = { conversation, message, view };
  setStreaming(true);
  const body = requestBody(conversation, model);
  const splitter = new DeltaSplitter();
  const stats = message.stats;
  const started = performance.now();
  let first = null;
  let thinkingStarted = null;
  let answerStarted = null;
  let deltas = 0;
  let usage = null;
  let timings = null;
  let shown = 0;
  const live = () => {
    const now = performance.now();
    if (now - shown < 100) return; // ten updates a second are enough to read
    shown = now;
    const rate = first !== null && now > first ? (deltas - 1) / ((now - first) / 1000) : 0;
    el.status.textContent = statusText(model, { ttft_s: stats.ttft_s, tokens_per_s: rate > 0 ? rate : 0 }) +
      ` · ${deltas} tokens so far`;
  };
  el.status.textContent = `${model} · waiting for the first token…`;
  try {
    for await (const chunk of streamChat(body, controller.signal)) {
      if (chunk.usage) usage = chunk.usage;
      if (chunk.timings) timings = chunk.timings;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      if (choice.finish_reason) stats.finish = choice.finish_reason;
      const { reasoning, content } = splitter.push(choice.delta ?? {});
      if (!reasoning && !content) continue;
      const now = performance.now();
      if (first === null) {
        first = now;
        stats.ttft_s = (now - started) / 1000;
      }
      deltas++;
      if (reasoning) {
        if (thinkingStarted === null) {
          thinkingStarted = now;
          view.startThinking();
        }
        message.reasoning += reasoning;
        stats.reasoning_tokens = (stats.reasoning_tokens ?? 0) + 1;
      }
      if (content) {
        if (answerStarted === null) {
          answerStarted = now;
          if (thinkingStarted !== null) {
            stats.thought_s = (now - thinkingStarted) / 1000;
            view.fold(stats);
          }
        }
        message.content += content;
      }
      view.update();
      live();
    }
  } catch (err) {
    if (err.name === "AbortError") {
      message.interrupted = true;
    } else {
      message.error = err instanceof ApiError || err instanceof TypeError ? err.message : String(err);
    }
  } finally {
    const now = performance.now();
    if (thinkingStarted !== null && stats.thought_s === undefined) stats.thought_s = (now - thinkingStarted) / 1000;
    if (usage) {
      stats.completion_tokens = usage.completion_tokens;
      stats.context_used = usage.prompt_tokens + usage.completion_tokens;
      stats.reasoning_tokens = usage.completion_tokens_details?.reasoning_tokens ?? stats.reasoning_tokens;
      stats.reasoning_tokens_exact = true;
    } else {
      stats.completion_tokens = deltas;
    }
    if (timings?.predicted_per_second) {
      stats.tokens_per_s = timings.predicted_per_second; // measured by the server, not by the network's pace
    } else if (first !== null && now > first && stats.completion_tokens > 1) {
      stats.tokens_per_s = (stats.completion_tokens - 1) / ((now - first) / 1000);
    }
    state.streaming = null;
    conversation.updated = Date.now();
    persist();
    await loadModels(); // the model may be loaded now: its context size is the loaded plan's
    stats.n_ctx = state.models.find((m) => m.id === model)?.n_ctx;
    persist();
    view.flush();
    el.status.textContent = statusText(model, stats) + (message.interrupted ? " · stopped" : "");
    state.controller = null;
    setStreaming(false);
    if (document.activeElement === document.body || document.activeElement === el.stop) el.prompt.focus();
  }
}

function stop() {
  state.controller?.abort();
}

// -- events -------------------------------------------------------------------------------------------------------
el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = el.prompt.value;
  if (!text.trim() || state.controller) return;
  el.prompt.value = "";
  send(text);
});

el.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    el.composer.requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.controller) stop();
  else if (event.key === "Escape" && document.body.classList.contains("side-open")) toggleSide(false);
});

el.stop.addEventListener("click", () => {
  stop();
  el.prompt.focus();
});

el.model.addEventListener("change", () => {
  el.modelInfo.textContent = describeModel(selectedModel());
  storeSettings();
});

for (const input of [el.temperature, el.maxTokens, el.thinking, el.budget]) {
  input.addEventListener("change", storeSettings);
}

el.newChat.addEventListener("click", () => {
  if (state.controller) return;
  const empty = state.conversations.find((c) => !c.messages.length);
  const conversation = empty ?? newConversation();
  if (!empty) state.conversations.push(conversation);
  state.current = conversation.id;
  drawChats();
  drawConversation();
  el.prompt.focus();
});

el.exportButton.addEventListener("click", () => {
  const conversation = currentConversation();
  if (!conversation?.messages.length) return;
  const blob = new Blob([toSaveJSON(conversation)], { type: "application/json" });
  const link = node("a");
  link.href = URL.createObjectURL(blob);
  const stamp = new Date(conversation.created).toISOString().slice(0, 16).replace(/[-:T]/g, "");
  link.download = `localseek-chat-${stamp}.json`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
});

el.importInput.addEventListener("change", async () => {
  const file = el.importInput.files?.[0];
  el.importInput.value = "";
  if (!file || state.controller) return;
  try {
    const conversation = fromSaveJSON(await file.text());
    state.conversations.push(conversation);
    state.current = conversation.id;
    persist();
    drawChats();
    drawConversation();
  } catch (err) {
    el.status.textContent = `Could not import ${file.name}: ${err.message}`;
  }
});

let deleteArmed = 0;
el.deleteButton.addEventListener("click", () => {
  const conversation = currentConversation();
  if (!conversation || state.controller) return;
  if (!deleteArmed) {
    el.deleteButton.textContent = "Delete: sure?";
    deleteArmed = setTimeout(() => {
      deleteArmed = 0;
      el.deleteButton.textContent = "Delete";
    }, 4000);
    return;
  }
  clearTimeout(deleteArmed);
  deleteArmed = 0;
  el.deleteButton.textContent = "Delete";
  state.conversations = state.conversations.filter((c) => c !== conversation);
  state.current = null;
  persist();
  el.newChat.click();
});

function toggleSide(open) {
  document.body.classList.toggle("side-open", open);
  el.menu.setAttribute("aria-expanded", String(open));
}

el.menu.addEventListener("click", () => toggleSide(!document.body.classList.contains("side-open")));
$("close-side").addEventListener("click", () => {
  toggleSide(false);
  el.menu.focus();
});
document.querySelector("main").addEventListener("click", () => toggleSide(false));

// A reload or a closed tab while a reply streams: keep what came, marked stopped.
window.addEventListener("pagehide", () => {
  if (state.streaming) {
    state.streaming.message.interrupted = true;
    persist();
  }
});

// -- start ---------------------------------------------------------------------------------------------------------
restoreSettings();
const latest = [...state.conversations].sort((a, b) => b.updated - a.updated)[0];
if (latest) {
  state.current = latest.id;
} else {
  const conversation = newConversation();
  state.conversations.push(conversation);
  state.current = conversation.id;
}
drawChats();
drawConversation();
loadModels();
el.prompt.focus();
