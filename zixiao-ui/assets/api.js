// The dashboard's only way to the deployment: the JSON gateway (/api/...)
// with the caller's bearer token when the server asks for one, and the
// live event stream (/api/events, Server-Sent Events read through fetch so
// the token can go in a header rather than the URL).

const TOKEN_KEY = "zixiao.token";

/** The token of this tab, if one was given. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps `value` as this tab's token (null forgets it). */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error the API answered: its HTTP status, error kind and message. */
export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

function headers(extra = {}) {
  const all = { Accept: "application/json", ...extra };
  const t = token();
  if (t) all.Authorization = `Bearer ${t}`;
  return all;
}

/** One call of the gateway; resolves to its JSON answer or throws ApiError. */
export async function call(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: { kind: "unknown", message: text } };
  }
  if (!response.ok) {
    const error = (data && data.error) || { kind: "unknown", message: response.statusText };
    throw new ApiError(response.status, error.kind, error.message);
  }
  return data;
}

/**
 * Follows /api/events, calling `onEvent(name, data)` for each event, until
 * the stream ends or fails (then it resolves or rejects; the caller
 * reconnects). `onOpen` is called once the stream is established.
 */
export async function watch(onEvent, onOpen, signal) {
  const response = await fetch("/api/events", { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    const error = (data && data.error) || { kind: "unknown", message: response.statusText };
    throw new ApiError(response.status, error.kind, error.message);
  }
  onOpen();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}
