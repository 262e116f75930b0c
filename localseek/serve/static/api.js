// The server's own API, nothing else: the model list and the streaming chat endpoint the `openai` client uses.
// With `localseek serve --api-key`, the key is asked for once and kept in sessionStorage (this tab only).

const KEY_STORE = "localseek.key";
const keyMeta = document.querySelector('meta[name="localseek-key"]');
export const keyRequired = keyMeta !== null && keyMeta.content === "required";

export class ApiError extends Error {
  constructor(message, status = 0, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

let askKey = async () => { throw new ApiError("This server wants an API key.", 401); };

/** `ask(refused)` shows the key prompt and resolves with the key typed. */
export function onKeyNeeded(ask) {
  askKey = ask;
}

async function ensureKey(refused) {
  if (refused) sessionStorage.removeItem(KEY_STORE);
  if (!(keyRequired || refused) || sessionStorage.getItem(KEY_STORE)) return;
  sessionStorage.setItem(KEY_STORE, await askKey(refused));
}

function withKey(headers = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { ...headers, Authorization: `Bearer ${key}` } : { ...headers };
}

/** fetch() with the key; a 401 asks for the key again and retries. */
export async function request(path, init = {}) {
  await ensureKey(false);
  for (;;) {
    const response = await fetch(path, { ...init, headers: withKey(init.headers) });
    if (response.status !== 401) return response;
    await response.body?.cancel();
    await ensureKey(true);
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch {
    // not JSON: the status line says enough
  }
  return new ApiError(message, response.status, code);
}

export async function getJSON(path) {
  const response = await request(path);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** POST /v1/chat/completions with stream: true; yields each SSE chunk (parsed JSON) until `data: [DONE]`.
 *  An error sent inside the stream is thrown as an ApiError; aborting `signal` throws an AbortError. */
export async function* streamChat(body, signal) {
  const response = await request("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(chunk.error.message || "The server reported an error.", 0, chunk.error.code);
        yield chunk;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** Splits streamed deltas into reasoning and answer, whichever field the server puts the reasoning in:
 *  `reasoning_content`, `reasoning`, or (`--reasoning-field inline`) `<think>…</think>` at the start of the content. */
export class DeltaSplitter {
  constructor() {
    this.mode = "start"; // start: content not seen yet; think: inside an inline <think>; plain
    this.held = "";
  }

  push(delta) {
    const out = { reasoning: delta.reasoning_content ?? delta.reasoning ?? "", content: "" };
    let text = delta.content ?? "";
    if (!text) return out;
    if (this.mode === "start") {
      this.held += text;
      if ("<think>".startsWith(this.held)) return out; // could still become the tag
      if (!this.held.startsWith("<think>")) {
        this.mode = "plain";
        out.content = this.held;
        this.held = "";
        return out;
      }
      this.mode = "think";
      text = this.held.slice("<think>".length).replace(/^\n/, "");
      this.held = "";
    }
    if (this.mode === "think") {
      this.held += text;
      const end = this.held.indexOf("</think>");
      if (end < 0) {
        const keep = Math.min(this.held.length, "</think>".length - 1); // a tag split across chunks
        out.reasoning += this.held.slice(0, this.held.length - keep);
        this.held = this.held.slice(this.held.length - keep);
        return out;
      }
      out.reasoning += this.held.slice(0, end).replace(/\n+$/, "");
      out.content = this.held.slice(end + "</think>".length).replace(/^\n+/, "");
      this.held = "";
      this.mode = "plain";
      return out;
    }
    out.content = text;
    return out;
  }
}
