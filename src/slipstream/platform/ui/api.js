// The platform's REST API with the user's key, its errors as messages, and its server-sent events.

// Beside /ui/, so a proxy that serves the platform under a prefix keeps working.
const BASE = new URL("../api/v1/", location.href);
const STORED = "slipstream.apiKey";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export const apiKey = {
  get: () => localStorage.getItem(STORED) || "",
  set: (key) => (key ? localStorage.setItem(STORED, key) : localStorage.removeItem(STORED)),
};

let unauthorized = () => {};
// What to do on a 401 (the app asks for the key again).
export function onUnauthorized(callback) { unauthorized = callback; }

function headers(more = {}) {
  const h = new Headers(more);
  const key = apiKey.get();
  if (key) h.set("Authorization", `Bearer ${key}`);
  return h;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = body?.error?.message || message;
  } catch { /* not JSON: the status line says it */ }
  if (response.status === 401) unauthorized(message);
  return new ApiError(message, response.status);
}

// path is relative to /api/v1/ ("models", "jobs/ID/log"); json or form is the body.
export async function request(path, { method = "GET", json, form, signal, text = false } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers.set("Content-Type", "application/json");
  } else if (form) {
    init.body = form;  // the browser sets the multipart boundary
  }
  const response = await fetch(new URL(path, BASE), init);
  if (!response.ok) throw await failure(response);
  return text ? response.text() : response.json();
}

export const api = {
  get: (path, options) => request(path, options),
  text: (path, options) => request(path, { ...options, text: true }),
  post: (path, json, options) => request(path, { ...options, method: "POST", json }),
  put: (path, json, options) => request(path, { ...options, method: "PUT", json }),
  del: (path, options) => request(path, { ...options, method: "DELETE" }),
  upload: (path, form, options) => request(path, { ...options, method: "POST", form }),
};

function parseFrame(text) {
  const frame = { event: "message", id: null, data: [] };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") frame.data.push(value);
    else if (field === "event") frame.event = value;
    else if (field === "id") frame.id = value;
  }
  return { ...frame, data: frame.data.join("\n") };
}

// Reads a text/event-stream with fetch (EventSource cannot send the key), calling onFrame({event, id, data})
// for each frame. True when the server said `event: end`, false when the stream closed without it.
export async function streamEvents(path, onFrame, signal) {
  const response = await fetch(new URL(path, BASE), { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = parseFrame(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (frame.event === "end") {
        reader.cancel().catch(() => {});
        return true;
      }
      onFrame(frame);
    }
  }
}
