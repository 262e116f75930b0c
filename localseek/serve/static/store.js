// Conversations kept in the browser (localStorage), and the JSON the terminal chat's /save writes and /load reads:
// {"system": null, "messages": [{"role": "user", "content": …},
//                               {"role": "assistant", "content": answer, "reasoning": …, "interrupted": "true"?}]}
// (localseek/chat/conversation.py: Conversation.save, two-space indent, non-ASCII as is).

const STORE = "localseek.conversations";
const SETTINGS = "localseek.settings";
const TITLE_LENGTH = 60;

export function newId() {
  // crypto.randomUUID needs a secure context, which a page on http://<LAN address> is not.
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
}

export function newConversation() {
  const now = Date.now();
  return { id: newId(), title: "New chat", created: now, updated: now, system: null, messages: [] };
}

export function titleFor(text) {
  const line = text.trim().split("\n")[0];
  return line.length > TITLE_LENGTH ? line.slice(0, TITLE_LENGTH - 1) + "…" : line || "New chat";
}

function read(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key) ?? "null");
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false; // full or switched off: the page keeps working, unsaved
  }
}

export function loadConversations() {
  const list = read(STORE, []);
  return Array.isArray(list) ? list.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages)) : [];
}

export function saveConversations(list) {
  return write(STORE, list.filter((c) => c.messages.length > 0));
}

export function loadSettings() {
  const value = read(SETTINGS, {});
  return typeof value === "object" && value !== null ? value : {};
}

export function saveSettings(settings) {
  write(SETTINGS, settings);
}

/** The /save JSON of a conversation (a failed reply with no text is left out, as the terminal chat records none). */
export function toSaveJSON(conversation) {
  const messages = [];
  for (const m of conversation.messages) {
    if (m.role === "user") {
      messages.push({ role: "user", content: m.content });
    } else if (m.role === "assistant" && (m.content || m.reasoning || m.interrupted)) {
      const turn = { role: "assistant", content: m.content, reasoning: m.reasoning || "" };
      if (m.interrupted) turn.interrupted = "true";
      messages.push(turn);
    }
  }
  return JSON.stringify({ system: conversation.system ?? null, messages }, null, 2);
}

/** A conversation from /save JSON (what Conversation.load accepts: user and assistant turns with text content). */
export function fromSaveJSON(text) {
  const data = JSON.parse(text);
  if (!data || !Array.isArray(data.messages)) throw new Error("not a localseek conversation (JSON with a 'messages' list)");
  const conversation = newConversation();
  conversation.system = typeof data.system === "string" && data.system ? data.system : null;
  for (const m of data.messages) {
    if (!m || !["user", "assistant"].includes(m.role) || typeof m.content !== "string") continue;
    if (m.role === "user") {
      conversation.messages.push({ role: "user", content: m.content });
    } else {
      const turn = { role: "assistant", content: m.content, reasoning: String(m.reasoning ?? "") };
      if (m.interrupted === "true" || m.interrupted === true) turn.interrupted = true;
      conversation.messages.push(turn);
    }
  }
  const first = conversation.messages.find((m) => m.role === "user");
  conversation.title = first ? titleFor(first.content) : "Imported chat";
  return conversation;
}
