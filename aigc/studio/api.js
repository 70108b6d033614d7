// The server's public API, and nothing else: JSON calls with the session's token, and event streams read with
// fetch (EventSource cannot send an Authorization header), resumed with Last-Event-ID.

const TOKEN_KEY = "aigc.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.field = error.field || null;
    this.type = error.aigc_type || error.type || null; // aigc's own error class; `type` is OpenAI's category
  }
}

function headers(extra = {}) {
  const out = { ...extra };
  if (token()) out.Authorization = `Bearer ${token()}`;
  return out;
}

function unauthorized() {
  window.dispatchEvent(new CustomEvent("aigc:token-needed"));
}

export async function call(path, { method = "GET", body, raw = false } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) {
    let parsed = null;
    try { parsed = await response.json(); } catch { /* not JSON: the status says it */ }
    if (response.status === 401) unauthorized();
    throw new ApiError(response.status, parsed);
  }
  return raw ? response : response.json();
}

export const get = (path) => call(path);
export const post = (path, body) => call(path, { method: "POST", body: body === undefined ? {} : body });
export const put = (path, body) => call(path, { method: "PUT", body });

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function parseBlock(block) {
  const event = { id: null, event: "message", data: "" };
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (key === "id") event.id = value;
    else if (key === "event") event.event = value;
    else if (key === "data") data.push(value);
  }
  if (!data.length) return null;
  try { event.data = JSON.parse(data.join("\n")); } catch { event.data = data.join("\n"); }
  return event;
}

// Stream `path`'s events after event id `after`, calling onEvent(event) for each; reconnects (with Last-Event-ID,
// so nothing is missed or seen twice) until stop() is called. A job's own stream ends when the job ends.
export function stream(path, { after = null, onEvent, onState = () => {}, endless = true }) {
  const control = new AbortController();
  // a page being left ends its streams: Chrome otherwise keeps each one's connection until the server next writes,
  // and six of them (six reloads in a minute) stall every other request to this server (measured: 59 s)
  window.addEventListener("pagehide", () => control.abort());
  let last = after;
  (async () => {
    while (!control.signal.aborted) {
      try {
        const extra = { Accept: "text/event-stream" };
        if (last !== null && last !== undefined) extra["Last-Event-ID"] = String(last);
        const response = await fetch(path, { headers: headers(extra), signal: control.signal });
        if (response.status === 401) { unauthorized(); await wait(3000); continue; }
        if (!response.ok) throw new ApiError(response.status, null);
        onState("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let match;
          while ((match = /\r?\n\r?\n/.exec(buffer))) {
            const event = parseBlock(buffer.slice(0, match.index));
            buffer = buffer.slice(match.index + match[0].length);
            if (event) {
              if (event.id !== null) last = event.id;
              onEvent(event);
            }
          }
        }
        if (!endless) return;
      } catch (error) {
        if (control.signal.aborted) return;
        onState("reconnecting");
      }
      await wait(1000);
    }
  })();
  return { stop: () => control.abort(), last: () => last };
}
