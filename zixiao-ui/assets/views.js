// The dashboard's views. Each loads what it shows through the gateway
// (one call per list) and builds its DOM with h(), which sets text, never
// HTML, so no name or message from the API can inject markup.

import { ApiError, call, token } from "./api.js";

const INSTANCE_TYPES = ["container", "microvm", "vm"];
const INSTANCE_STATUSES = ["pending", "scheduled", "creating", "running", "paused", "stopping", "stopped", "failed", "deleting"];
const NODE_STATUSES = ["ready", "not_ready", "cordoned", "maintenance", "draining", "decommissioned"];

/** An element: h("td", { class: "num" }, "3", otherNode). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const badge = (status) => h("span", { class: `badge ${status}`, "data-status": status }, status.replace("_", " "));
const link = (href, text) => h("a", { href }, text);
const instanceLink = (instance) => link(`#/instances/${encodeURIComponent(instance.name)}`, instance.name);
const when = (time) => (time ? new Date(time).toLocaleString() : "—");

function count(label, n, testid) {
  return h("div", { class: "count", "data-testid": testid }, h("div", { class: "n" }, n), h("div", { class: "label" }, label));
}

function tally(items, key) {
  const counts = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] || 0) + 1;
  return counts;
}

function gauge(label, used, total, unit) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const level = share >= 1 ? "full" : share >= 0.8 ? "high" : "";
  const fill = h("div", { class: `fill ${level}` });
  // Through the CSSOM: the content security policy refuses style attributes.
  fill.style.width = `${share * 100}%`;
  return h("div", { class: "gauge", "data-testid": `gauge-${label.toLowerCase()}` },
    h("div", { class: "legend" }, h("span", {}, label), h("span", {}, `${used} / ${total} ${unit} (${Math.round(share * 100)}%)`)),
    h("div", { class: "bar", role: "meter", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": used },
      fill));
}

/** Overview: nodes by status, instances by type and status, capacity. */
export async function overview() {
  const [nodes, instances] = await Promise.all([call("GET", "/api/nodes"), call("GET", "/api/instances")]);
  const byNodeStatus = tally(nodes, (n) => n.status);
  const byType = tally(instances, (i) => i.spec.type);
  const sum = (side, field) => nodes.reduce((total, n) => total + (side === "allocatable" ? allocatable(n, field) : (n[side][field] || 0)), 0);
  const statusesSeen = INSTANCE_STATUSES.filter((s) => instances.some((i) => i.status === s));
  return h("section", { "data-testid": "overview" },
    h("h1", {}, "Overview"),
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Nodes"),
        h("div", { class: "counts" }, count("nodes", nodes.length, "nodes-total"),
          NODE_STATUSES.filter((s) => byNodeStatus[s]).map((s) => count(s.replace("_", " "), byNodeStatus[s], `nodes-${s}`)))),
      h("div", { class: "panel" }, h("h2", {}, "Instances"),
        h("div", { class: "counts" }, count("instances", instances.length, "instances-total"),
          INSTANCE_TYPES.filter((t) => byType[t]).map((t) => count(t, byType[t], `instances-${t}`)))),
      h("div", { class: "panel" }, h("h2", {}, "Capacity"),
        gauge("CPUs", sum("allocated", "cpus"), sum("allocatable", "cpus"), "cores"),
        gauge("Memory", sum("allocated", "memory_mib"), sum("allocatable", "memory_mib"), "MiB"),
        gauge("Disk", sum("allocated", "disk_gib"), sum("capacity", "disk_gib"), "GiB"))),
    h("div", { class: "panel" }, h("h2", {}, "Instances by type and status"),
      instances.length === 0 ? h("p", { class: "muted" }, "No instances yet: ", link("#/instances", "create one"), ".") :
        h("table", { "data-testid": "type-status" },
          h("thead", {}, h("tr", {}, h("th", {}, "type"), statusesSeen.map((s) => h("th", { class: "num" }, s)))),
          h("tbody", {}, INSTANCE_TYPES.filter((t) => byType[t]).map((t) =>
            h("tr", {}, h("td", {}, t), statusesSeen.map((s) =>
              h("td", { class: "num" }, instances.filter((i) => i.spec.type === t && i.status === s).length))))))),
    h("div", { class: "panel" }, h("h2", {}, "Nodes"), nodeTable(nodes)));
}

/** What may be reserved on node `n` of `field`: its capacity times its
 * allocation ratio for CPU and memory (what placement counts against). */
function allocatable(n, field) {
  const ratios = n.allocation_ratios || { cpu: 1, memory: 1 };
  const ratio = field === "cpus" ? ratios.cpu : field === "memory_mib" ? ratios.memory : 1;
  return Math.floor((n.capacity[field] || 0) * ratio * 1000) / 1000;
}

function nodeTable(nodes) {
  return h("table", { "data-testid": "node-table" },
    h("thead", {}, h("tr", {}, ["hostname", "status", "role", "zone", "runtimes"].map((c) => h("th", {}, c)),
      ["CPUs", "memory MiB", "instances"].map((c) => h("th", { class: "num" }, c)), h("th", {}, "heartbeat"))),
    h("tbody", {}, nodes.map((n) => h("tr", { "data-node": n.hostname },
      h("td", {}, link(`#/nodes/${encodeURIComponent(n.hostname)}`, n.hostname)), h("td", {}, badge(n.status)), h("td", {}, n.role), h("td", {}, `${n.region}/${n.zone}`),
      h("td", {}, (n.runtimes || []).join(", ") || "—"),
      h("td", { class: "num" }, `${n.allocated.cpus} / ${allocatable(n, "cpus")}`),
      h("td", { class: "num" }, `${n.allocated.memory_mib} / ${allocatable(n, "memory_mib")}`),
      h("td", { class: "num" }, `${n.allocated.instances} / ${n.capacity.instances}`),
      h("td", {}, when(n.last_heartbeat))))));
}

/** Node list. */
export async function nodes() {
  const list = await call("GET", "/api/nodes");
  return h("section", { "data-testid": "nodes" }, h("h1", {}, "Nodes"), h("div", { class: "panel" }, nodeTable(list)));
}

/** One node: where it is, what it can run, its capacity and its instances. */
export async function node(name) {
  const n = await call("GET", `/api/nodes/${encodeURIComponent(name)}`);
  const placed = await call("GET", `/api/instances?node=${encodeURIComponent(n.id)}`);
  const missing = Object.entries(n.missing_runtimes || {}).map(([type, why]) => `${type}: ${why}`);
  const labels = Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`);
  const fields = [
    ["id", n.id], ["status", badge(n.status)], ["role", n.role], ["address", n.address],
    ["region / zone", `${n.region} / ${n.zone}`], ["runtimes", (n.runtimes || []).join(", ") || "—"],
    ["missing runtimes", missing.join("; ") || "—"], ["labels", labels.join(", ") || "—"],
    ["traits", (n.traits || []).join(", ") || "—"], ["heartbeat", when(n.last_heartbeat)],
    ["allocation ratios", `cpu ${n.allocation_ratios.cpu}, memory ${n.allocation_ratios.memory} (of ${n.capacity.cpus} cores, ${n.capacity.memory_mib} MiB)`],
  ];
  return h("section", { "data-testid": "node", "data-node": n.hostname },
    h("h1", {}, link("#/nodes", "Nodes"), " / ", n.hostname, " ", badge(n.status)),
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("dl", { class: "fields" }, fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
      h("div", { class: "panel" }, h("h2", {}, "Capacity"),
        gauge("CPUs", n.allocated.cpus, allocatable(n, "cpus"), "cores"),
        gauge("Memory", n.allocated.memory_mib, allocatable(n, "memory_mib"), "MiB"),
        gauge("Disk", n.allocated.disk_gib, n.capacity.disk_gib, "GiB"),
        gauge("Instances", n.allocated.instances, n.capacity.instances, ""))),
    usagePanel(`/api/nodes/${encodeURIComponent(n.id)}/stats/history`, nodeCharts(n)),
    h("div", { class: "panel" }, h("h2", {}, "Instances"),
      placed.length === 0 ? h("p", { class: "muted" }, "None on this node.") :
        h("ul", { "data-testid": "node-instances" }, placed.map((i) => h("li", {}, instanceLink(i), " ", badge(i.status))))));
}

/**
 * The quick actions of one instance. `done(message)` is called after a
 * successful action, `failed(error)` after a refused one.
 */
function actions(instance, done, failed) {
  const act = (label, method, path, confirmText) => h("button", {
    type: "button",
    class: label === "delete" ? "danger" : undefined,
    "data-action": label,
    onclick: async (event) => {
      if (confirmText && !window.confirm(confirmText)) return;
      const buttons = event.target.parentElement.querySelectorAll("button");
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await call(method, path);
        done(`${label}: ${instance.name} done`);
      } catch (error) {
        failed(error);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    },
  }, label);
  const base = `/api/instances/${encodeURIComponent(instance.name)}`;
  return h("div", { class: "actions" },
    act("start", "POST", `${base}/start`), act("stop", "POST", `${base}/stop`),
    act("restart", "POST", `${base}/restart`),
    act("delete", "DELETE", base, `Delete ${instance.name}? Its data is removed.`));
}

function select(name, label, values, current) {
  return h("label", {}, label, h("select", { name, "data-testid": `filter-${name}` },
    h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v, selected: v === current }, v))));
}

/** Instance list with its type and status filter and the create form. */
export async function instances(params, ui) {
  const query = new URLSearchParams();
  for (const key of ["type", "status"]) if (params.get(key)) query.set(key, params.get(key));
  const list = await call("GET", `/api/instances?${query}`);
  const filters = h("form", { class: "filters", "data-testid": "filters" },
    select("type", "Type", INSTANCE_TYPES, params.get("type")),
    select("status", "Status", INSTANCE_STATUSES, params.get("status")));
  filters.addEventListener("change", () => {
    const chosen = new URLSearchParams();
    for (const [key, value] of new FormData(filters)) if (value) chosen.set(key, value);
    location.hash = `#/instances${chosen.toString() ? `?${chosen}` : ""}`;
  });
  return h("section", { "data-testid": "instances" },
    h("h1", {}, "Instances"),
    h("div", { class: "panel" }, h("h2", {}, "Create a container"), createForm(ui)),
    h("div", { class: "panel" }, filters),
    h("div", { class: "panel" }, list.length === 0 ? h("p", { class: "muted" }, "No instances match.") :
      h("table", { "data-testid": "instance-table" },
        h("thead", {}, h("tr", {}, ["name", "type", "status", "wanted", "node", "image", "created", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, list.map((i) => h("tr", { "data-instance": i.name },
          h("td", {}, instanceLink(i)), h("td", {}, i.spec.type), h("td", {}, badge(i.status)), h("td", {}, i.desired),
          h("td", {}, i.node || "—"), h("td", {}, i.spec.image || "—"), h("td", {}, when(i.created_at)),
          h("td", {}, actions(i, ui.done, ui.failed))))))));
}

function createForm(ui) {
  const form = h("form", { class: "inline", "data-testid": "create-form" },
    h("label", {}, "Name", h("input", { name: "name", required: true, placeholder: "web-1", autocomplete: "off" })),
    h("label", {}, "Type", h("select", { name: "type" }, h("option", { value: "container" }, "container"))),
    h("label", {}, "Image", h("input", { name: "image", required: true, placeholder: "busybox" })),
    h("label", {}, "Command", h("input", { name: "command", placeholder: "sleep 3600" })),
    h("label", {}, "CPUs", h("input", { name: "cpus", type: "number", min: 0.001, step: 0.001, value: 1 })),
    h("label", {}, "Memory MiB", h("input", { name: "memory_mib", type: "number", min: 16, value: 128 })),
    h("button", { type: "submit", class: "primary" }, "Create"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const command = String(data.get("command") || "").trim();
    const request = {
      name: String(data.get("name")).trim(),
      spec: {
        type: data.get("type"),
        image: String(data.get("image")).trim(),
        cpus: Number(data.get("cpus")),
        memory_mib: Number(data.get("memory_mib")),
        ...(command ? { command: command.split(/\s+/) } : {}),
      },
    };
    const button = form.querySelector("button");
    button.disabled = true;
    button.textContent = "Creating…";
    try {
      const created = await call("POST", "/api/instances", request);
      ui.done(`created ${created.name}: ${created.status}`);
      form.reset();
    } catch (error) {
      ui.failed(error);
    } finally {
      button.disabled = false;
      button.textContent = "Create";
    }
  });
  return form;
}

/** The console panel of the instance page: one at a time, kept across live redraws. */
let openConsole = null;

/**
 * Puts the live console panel into the slot a view left for it; called
 * once the view is on the page. A view holds only a slot, so building a
 * view that is never shown (a redraw a later one overtook) cannot take the
 * panel off the page.
 */
export function mountConsole(root) {
  const slot = root.querySelector("[data-console-slot]");
  if (slot && openConsole && slot.dataset.consoleSlot === openConsole.name) slot.replaceWith(openConsole.panel);
}

/** Whether `element` is inside the live console panel, which redraws keep. */
export function inConsole(element) {
  return Boolean(openConsole && element && openConsole.panel.contains(element));
}

/** Closes the open console unless it is `name`'s (the page moved on). */
export function closeConsole(name) {
  if (openConsole && openConsole.name !== name) {
    const { socket, terminal } = openConsole;
    if (socket) {
      // Its handlers would write to the terminal disposed below.
      socket.onmessage = null;
      socket.onclose = null;
      socket.close();
    }
    if (terminal) terminal.dispose();
    openConsole = null;
  }
}

/**
 * The instance types whose console is a pipe rather than a terminal. A
 * VM's console is its serial port, a TTY in the guest: the guest echoes,
 * edits the line and reads Enter as "\r", so keys go as typed. A
 * container's console is its standard input, a pipe (the containerd driver
 * gives containers no TTY): nothing echoes, and a shell reads lines that
 * end in "\n", so the page does the part of a TTY's line discipline the
 * pipe lacks ({@link lineDiscipline}).
 */
const PIPE_CONSOLES = ["container"];

/**
 * What a TTY's line discipline would do for a pipe: echoes what is typed
 * into `terminal`, lets Backspace and Ctrl-U edit the line, Ctrl-C drop
 * it, and calls `send` with the line and "\n" on Enter. Escape sequences
 * (arrows, function keys) are dropped: a pipe has no cursor to move.
 * Returns the handler of the terminal's typed data.
 */
function lineDiscipline(terminal, send) {
  let line = [];
  let afterReturn = false;
  return (data) => {
    for (const char of data.replace(/\x1b(\[[0-9;?]*[ -\/]*[@-~]|O.|.)?/g, "")) {
      // A paste's "\r\n" is one Enter, not two.
      const wasReturn = afterReturn;
      afterReturn = char === "\r";
      if (char === "\n" && wasReturn) continue;
      if (char === "\r" || char === "\n") {
        terminal.write("\r\n");
        send(`${line.join("")}\n`);
        line = [];
      } else if (char === "\x7f" || char === "\b") {
        if (line.pop() !== undefined) terminal.write("\b \b");
      } else if (char === "\x15") {
        terminal.write("\b \b".repeat(line.length));
        line = [];
      } else if (char === "\x03") {
        terminal.write("^C\r\n");
        line = [];
      } else if (char >= " ") {
        line.push(char);
        terminal.write(char);
      }
    }
  };
}

/**
 * xterm.js writes the styles it computes (cell size, colours) into
 * <style> elements, which the dashboard's content security policy refuses
 * (it allows no inline style). Copies them into one constructed stylesheet,
 * which the policy allows, whenever xterm.js rewrites them. Returns what
 * undoes it.
 */
function adoptTerminalStyles(terminal) {
  const sheet = new CSSStyleSheet();
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  const copy = () => sheet.replaceSync([...terminal.element.querySelectorAll("style")]
    .map((style) => style.textContent).join("\n"));
  const isStyle = (node) => node && node.nodeName === "STYLE";
  const observer = new MutationObserver((records) => {
    if (records.some((r) => isStyle(r.target) || isStyle(r.target.parentNode) || [...r.addedNodes].some(isStyle))) copy();
  });
  observer.observe(terminal.element, { subtree: true, childList: true, characterData: true });
  copy();
  return () => {
    observer.disconnect();
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
  };
}

/**
 * The terminal of a console panel, drawn into `screen` and sized to it
 * (the instance is not told the size: the console API carries bytes only).
 * `pipe` says whether it needs {@link lineDiscipline}.
 */
function newTerminal(screen, pipe) {
  const terminal = new window.Terminal({
    cursorBlink: true, fontSize: 13, scrollback: 5000,
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
    // A pipe's output has bare "\n" line ends, which a terminal only moves down on.
    convertEol: pipe,
  });
  const fit = new window.FitAddon.FitAddon();
  terminal.loadAddon(fit);
  terminal.open(screen);
  const unadopt = adoptTerminalStyles(terminal);
  // Fitting a panel a redraw has taken off the page for a moment does nothing.
  const resize = new ResizeObserver(() => fit.fit());
  resize.observe(screen);
  fit.fit();
  const dispose = terminal.dispose.bind(terminal);
  terminal.dispose = () => {
    resize.disconnect();
    unadopt();
    dispose();
  };
  return terminal;
}

/**
 * `instance`'s console: a WebSocket bridged to the API's console stream,
 * shown in a terminal (xterm.js) that gets its output bytes and sends what
 * is typed (see {@link PIPE_CONSOLES}). Returns the slot the panel goes in
 * (see {@link mountConsole}).
 */
function consolePanel(instance) {
  const name = instance.name;
  const slot = h("div", { "data-console-slot": name });
  if (openConsole && openConsole.name === name) return slot;
  closeConsole();
  const pipe = PIPE_CONSOLES.includes(instance.spec.type);
  const session = { name, panel: null, socket: null, terminal: null };
  const screen = h("div", { class: "console", "data-testid": "console-output" });
  const state = h("span", { class: "muted", "data-testid": "console-state" }, "not connected");
  const open = h("button", { type: "button", "data-action": "console" }, "Open console");
  const send = (data) => {
    if (session.socket && session.socket.readyState === WebSocket.OPEN) session.socket.send(data);
  };
  open.addEventListener("click", () => {
    if (!window.Terminal || !window.FitAddon) {
      state.textContent = "the terminal (vendor/xterm.js) did not load";
      return;
    }
    if (!session.terminal) {
      session.terminal = newTerminal(screen, pipe);
      const typed = pipe ? lineDiscipline(session.terminal, send) : send;
      session.terminal.onData((data) => typed(data));
      // Bytes that are not text (some mouse reports) go as they are.
      session.terminal.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    } else {
      session.terminal.write("\r\n");
    }
    // A browser's WebSocket cannot send Authorization: the token rides as a subprotocol.
    const protocols = ["zixiao.console"];
    if (token()) protocols.push(`zixiao.bearer.${token()}`);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/api/instances/${encodeURIComponent(name)}/console`, protocols);
    socket.binaryType = "arraybuffer";
    session.socket = socket;
    open.disabled = true;
    state.textContent = "connecting";
    socket.onopen = () => {
      state.textContent = "connected";
      session.terminal.options.disableStdin = false;
      session.terminal.focus();
    };
    socket.onmessage = (event) => session.terminal.write(new Uint8Array(event.data));
    socket.onclose = () => {
      state.textContent = "closed";
      // What it printed stays to read; typing waits for the next session.
      session.terminal.options.disableStdin = true;
      open.disabled = false;
    };
  });
  session.panel = h("div", { class: "panel", "data-testid": "console", "data-console-mode": pipe ? "line" : "raw" },
    h("h2", {}, "Console"),
    h("div", { class: "actions" }, open, state,
      h("span", { class: "muted" }, pipe ? "a container's standard input: lines are sent on Enter" : "keys go to the guest as typed")),
    screen);
  openConsole = session;
  return slot;
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element (attributes only: the charts hold no text from the API). */
function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/**
 * A trend chart of `points` ([{ t: ms, v: number }], oldest first) as an
 * SVG line scaled to its largest value (at least `floor`, so a flat idle
 * line sits low rather than filling the chart), with the latest and the
 * largest value under it. `data-points` says how many points it drew.
 */
function chart(title, points, unit, floor, testid) {
  return lines(title, [{ points, label: "" }], unit, Math.max(floor, ...points.map((p) => p.v)), testid);
}

/**
 * A trend chart of several `series` ([{ points, label, cls }]) on one
 * time axis and one scale whose top is `top` (a capacity, or the largest
 * value), each with its latest and largest value in the legend. A series
 * with no points draws nothing; `data-points` counts the first series'.
 */
function lines(title, series, unit, top, testid) {
  const width = 300;
  const height = 80;
  const all = series.flatMap((s) => s.points);
  const first = all.length ? Math.min(...all.map((p) => p.t)) : 0;
  const span = all.length > 1 ? Math.max(...all.map((p) => p.t)) - first || 1 : 1;
  const x = (p) => ((p.t - first) / span) * width;
  const y = (p) => height - (Math.min(p.v, top) / top) * (height - 4) - 2;
  const format = (v) => (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(3));
  const legend = (s) => {
    const name = s.label ? `${s.label}: ` : "";
    if (!s.points.length) return `${name}no samples yet`;
    const last = s.points[s.points.length - 1].v;
    const largest = Math.max(...s.points.map((p) => p.v));
    return `${name}now ${format(last)} ${unit} · max ${format(largest)} ${unit}`;
  };
  return h("figure", { class: "chart", "data-testid": testid, "data-points": series[0].points.length },
    h("figcaption", {}, title),
    svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": `${title} over time` },
      svg("line", { class: "axis", x1: 0, y1: height - 1, x2: width, y2: height - 1 }),
      ...series.map((s) => s.points.length > 1
        ? svg("polyline", {
          class: `series ${s.cls || ""}`.trim(),
          points: s.points.map((p) => `${x(p).toFixed(1)},${y(p).toFixed(1)}`).join(" "),
        })
        : svg("g"))),
    ...series.map((s) => h("div", { class: `legend ${s.cls || ""}`.trim() }, legend(s))));
}

/**
 * A usage panel: the server's recent samples from `path`, drawn by
 * `charts(samples)` (an array of charts). It refreshes itself while it is
 * on the page, since samples arrive on the server's clock rather than as
 * watch events.
 */
function usagePanel(path, charts) {
  const body = h("div", { class: "charts" }, h("p", { class: "muted" }, "Loading usage…"));
  const panel = h("div", { class: "panel", "data-testid": "usage" }, h("h2", {}, "Usage"), body);
  const load = async () => {
    let samples;
    try {
      samples = await call("GET", path);
    } catch (error) {
      body.replaceChildren(h("p", { class: "muted" }, `No usage history: ${error.message}`));
      return false;
    }
    body.replaceChildren(...charts(samples));
    return true;
  };
  load().then((ok) => {
    if (!ok) return;
    const timer = setInterval(() => {
      if (!panel.isConnected) clearInterval(timer);
      else load();
    }, USAGE_REFRESH_MS);
  });
  return panel;
}

/**
 * An instance's charts: CPU (cores busy, from the CPU time counter's
 * growth between samples) and memory.
 */
function instanceCharts(samples) {
  const at = samples.map((s) => Date.parse(s.at));
  const cpu = [];
  for (let k = 1; k < samples.length; k++) {
    const elapsed = (at[k] - at[k - 1]) * 1e6;
    const used = samples[k].cpu_time_ns - samples[k - 1].cpu_time_ns;
    // A restart resets the counter: no point for that interval.
    if (elapsed > 0 && used >= 0) cpu.push({ t: at[k], v: used / elapsed });
  }
  const memory = samples.map((s, k) => ({ t: at[k], v: s.memory_bytes / 1048576 }));
  const limit = samples.length ? samples[samples.length - 1].memory_limit_bytes : null;
  return [
    chart("CPU", cpu, "cores", 0.05, "chart-cpu"),
    chart(limit ? `Memory (limit ${Math.round(limit / 1048576)} MiB)` : "Memory", memory, "MiB", 1, "chart-memory"),
  ];
}

/**
 * A node's charts: what its instances used together (the server's sums)
 * beside what the whole host used (every process, as its agent reported),
 * on a scale up to the host's capacity (the node's when the host has not
 * reported). A sample without a host reading leaves the host line out
 * there rather than drawing zero.
 */
function nodeCharts(node) {
  return (samples) => {
    const point = (s, v) => ({ t: Date.parse(s.at), v });
    const known = (pick) => samples.filter((s) => pick(s) != null).map((s) => point(s, pick(s)));
    const latest = (pick) => {
      const found = samples.filter((s) => pick(s) != null);
      return found.length ? pick(found[found.length - 1]) : null;
    };
    const cores = latest((s) => s.host_cpu_capacity_millicores);
    const cpuTop = cores != null ? cores / 1000 : node.capacity.cpus;
    const bytes = latest((s) => s.host_memory_capacity_bytes);
    const memoryTop = bytes != null ? bytes / 1048576 : node.capacity.memory_mib;
    const load = latest((s) => s.host_load1);
    return [
      lines(`CPU (of ${cpuTop} cores${load != null ? `, load ${load.toFixed(2)}` : ""})`, [
        { points: samples.map((s) => point(s, s.cpu_millicores / 1000)), label: "instances" },
        { points: known((s) => s.host_cpu_millicores).map((p) => ({ ...p, v: p.v / 1000 })), label: "host", cls: "host" },
      ], "cores", cpuTop, "chart-cpu"),
      lines(`Memory (of ${Math.round(memoryTop)} MiB)`, [
        { points: samples.map((s) => point(s, s.memory_bytes / 1048576)), label: "instances" },
        { points: known((s) => s.host_memory_bytes).map((p) => ({ ...p, v: p.v / 1048576 })), label: "host", cls: "host" },
      ], "MiB", memoryTop, "chart-memory"),
    ];
  };
}

/** How often an open usage panel asks for new samples. */
const USAGE_REFRESH_MS = 5000;

/** A size in bytes, in the largest binary unit under 1024 of it. */
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? n : n.toFixed(1)} ${units[unit]}`;
}

/** A snapshot name for now, such as snap-20261207-0415 (UTC). */
function snapshotNameNow() {
  return `snap-${new Date().toISOString().slice(0, 16).replace(/[-:]/g, "").replace("T", "-")}`;
}

/** The button that deletes `instance`'s snapshot `name`, once confirmed. */
function removeSnapshot(instance, name, ui) {
  return h("button", {
    type: "button", class: "danger", "data-action": "delete-snapshot",
    onclick: async (event) => {
      if (!window.confirm(`Delete snapshot ${name} of ${instance.name}?`)) return;
      event.target.disabled = true;
      try {
        await call("DELETE", `/api/instances/${encodeURIComponent(instance.name)}/snapshots/${encodeURIComponent(name)}`);
        ui.done(`snapshot ${name} of ${instance.name} deleted`);
      } catch (error) {
        ui.failed(error);
      }
    },
  }, "delete");
}

/**
 * The instance page's snapshots: `listed` is the API's list, or the error
 * it answered (a runtime that takes none says so, as `unsupported`), each
 * with a delete button, and a form that takes one now.
 */
function snapshotsPanel(instance, listed, ui) {
  const panel = (...children) => h("div", { class: "panel", "data-testid": "snapshots" }, h("h2", {}, "Snapshots"), ...children);
  if (listed instanceof ApiError && listed.kind === "unsupported") {
    return panel(h("p", { class: "muted", "data-testid": "snapshots-unsupported" }, `None: ${listed.message}`));
  }
  if (listed instanceof Error) {
    return panel(h("p", { class: "error" }, listed instanceof ApiError ? `${listed.kind}: ${listed.message}` : String(listed)));
  }
  const table = listed.length === 0 ? h("p", { class: "empty" }, "No snapshots yet.") :
    h("table", { "data-testid": "snapshot-table" },
      h("thead", {}, h("tr", {}, ["name", "taken", "holds", "", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, listed.map((s) => h("tr", { "data-snapshot": s.name },
        h("td", {}, s.name), h("td", {}, when(s.created_at)),
        h("td", {}, s.includes_memory ? "disks and memory" : "disks"),
        h("td", {}, s.current ? h("span", { class: "badge running" }, "current") : ""),
        h("td", {}, removeSnapshot(instance, s.name, ui))))));
  const form = h("form", { class: "inline", "data-testid": "snapshot-form" },
    h("label", {}, "Name", h("input", { name: "name", required: true, value: snapshotNameNow(), autocomplete: "off" })),
    h("button", { type: "submit", "data-action": "snapshot" }, "Snapshot now"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = String(new FormData(form).get("name")).trim();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      await call("POST", `/api/instances/${encodeURIComponent(instance.name)}/snapshots`, { name });
      // Off the form first: a redraw waits while a form has the focus.
      if (form.contains(document.activeElement)) document.activeElement.blur();
      ui.done(`snapshot ${name} of ${instance.name} taken`);
    } catch (error) {
      ui.failed(error);
    } finally {
      button.disabled = false;
    }
  });
  return panel(table, form);
}

/** One instance, live: its fields, conditions, quick actions and snapshots. */
export async function instance(name, ui) {
  const path = `/api/instances/${encodeURIComponent(name)}`;
  const [i, snapshots] = await Promise.all([
    call("GET", path),
    call("GET", `${path}/snapshots`).catch((error) => error),
  ]);
  const fields = [
    ["id", i.id], ["type", i.spec.type], ["status", badge(i.status)], ["wanted", i.desired],
    ["node", i.node || "—"], ["image", i.spec.image || "—"], ["command", (i.spec.command || []).join(" ") || "—"],
    ["CPUs", i.spec.cpus], ["memory", `${i.spec.memory_mib} MiB`], ["restart policy", i.spec.restart],
    ["created", when(i.created_at)], ["started", when(i.started_at)], ["updated", when(i.updated_at)],
    ["exit", i.exit ? JSON.stringify(i.exit) : "—"],
    ["operations", link(`#/operations?target=${encodeURIComponent(i.name)}`, "its long calls")],
  ];
  return h("section", { "data-testid": "instance", "data-instance": i.name, "data-status": i.status },
    h("h1", {}, link("#/instances", "Instances"), " / ", i.name, " ", badge(i.status)),
    h("div", { class: "panel" }, actions(i, ui.done, (error) => ui.failed(error))),
    i.status === "running" || (openConsole && openConsole.name === i.name) ? consolePanel(i) : null,
    h("div", { class: "panel" }, h("dl", { class: "fields" }, fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
    i.status === "running" ? usagePanel(`/api/instances/${encodeURIComponent(i.name)}/stats/history`, instanceCharts) : null,
    snapshotsPanel(i, snapshots, ui),
    (i.conditions || []).length ? h("div", { class: "panel" }, h("h2", {}, "Conditions"),
      h("ul", {}, i.conditions.map((c) => h("li", {}, h("strong", {}, c.type), ` (${c.reason}): ${c.message}`)))) : null,
    i.failure ? h("div", { class: "panel error" }, h("h2", {}, "Failure"), JSON.stringify(i.failure)) : null,
    h("details", { class: "panel" }, h("summary", {}, "As JSON"), h("pre", {}, JSON.stringify(i, null, 2))));
}

/**
 * The instance type whose image list a node answers with all it holds: its
 * container runtime lists the node's image store as well; a node without
 * one lists its store through the first runtime it has.
 */
function imageListType(node) {
  const runtimes = node.runtimes || [];
  return runtimes.includes("container") ? "container" : runtimes[0];
}

/** Images: what each node holds, one row per image with the nodes holding it. */
export async function images() {
  const nodes = await call("GET", "/api/nodes");
  const held = await Promise.all(nodes.filter(imageListType).map(async (n) => {
    const query = `node=${encodeURIComponent(n.id)}&type=${imageListType(n)}`;
    try {
      return { node: n, images: await call("GET", `/api/images?${query}`) };
    } catch (error) {
      return { node: n, images: [], error };
    }
  }));
  const rows = new Map();
  for (const { node, images: list } of held) {
    for (const image of list) {
      const key = `${image.kind} ${image.name} ${image.digest}`;
      if (!rows.has(key)) rows.set(key, { image, nodes: [] });
      rows.get(key).nodes.push(node.hostname);
    }
  }
  const failures = held.filter((n) => n.error).map(({ node, error }) =>
    h("p", { class: "error" }, `${node.hostname}: `, error instanceof ApiError ? `${error.kind}: ${error.message}` : String(error)));
  const table = rows.size === 0 ? h("p", { class: "empty" }, "No images yet: zixiao image import FILE, or zixiao image pull REF") :
    h("table", { "data-testid": "image-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", {}, "type"), h("th", { class: "num" }, "size"),
        ["digest", "imported", "nodes"].map((c) => h("th", {}, c)))),
      h("tbody", {}, [...rows.values()].map(({ image, nodes: on }) => h("tr", { "data-image": image.name, "data-kind": image.kind },
        h("td", {}, image.name), h("td", {}, image.format ? `${image.kind} (${image.format})` : image.kind),
        h("td", { class: "num" }, bytes(image.size_bytes)),
        h("td", { class: "digest", title: image.digest }, image.digest.replace(/^(sha256:.{12}).*$/, "$1…")),
        h("td", {}, when(image.created_at)),
        h("td", {}, on.map((hostname) => [link(`#/nodes/${encodeURIComponent(hostname)}`, hostname), " "]))))));
  return h("section", { "data-testid": "images" }, h("h1", {}, "Images"), h("div", { class: "panel" }, failures, table));
}

/** Templates: each version, when it was made, what it runs and who uses it. */
export async function templates() {
  const list = await call("GET", "/api/templates");
  const rows = list.flatMap((t) => t.versions.map((v) =>
    h("tr", { "data-template": t.name, "data-version": v.version },
      h("td", {}, t.name), h("td", {}, `v${v.version}`, v.deleting ? " (deleting)" : ""),
      h("td", {}, v.spec.type), h("td", {}, v.spec.image || v.spec.kernel || "—"),
      h("td", {}, `${v.spec.cpus} × ${v.spec.memory_mib} MiB`), h("td", {}, when(v.created_at)),
      h("td", {}, v.instances.length ? v.instances.map((name) =>
        [link(`#/instances/${encodeURIComponent(name)}`, name), " "]) : "—"))));
  const table = rows.length
    ? h("table", {}, h("thead", {}, h("tr", {}, ["Template", "Version", "Type", "Image", "Size", "Created", "Used by"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows))
    : h("p", { class: "empty" }, "No templates yet: zixiao template create NAME -f spec.yaml");
  return h("section", { "data-testid": "templates" }, h("h1", {}, "Templates"), h("div", { class: "panel" }, table));
}

/** How long an operation took, or has been running. */
function took(op) {
  const ms = (op.finished_at ? new Date(op.finished_at) : new Date()) - new Date(op.started_at);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Operations: the long calls, newest first, with where each got. */
export async function operations(params) {
  const target = params.get("target") || "";
  const list = await call("GET", `/api/operations${target ? `?target=${encodeURIComponent(target)}` : ""}`);
  const targetCell = (op) => (op.target.kind === "instance"
    ? link(`#/instances/${encodeURIComponent(op.target.name)}`, op.target.name)
    : `${op.target.kind} ${op.target.name}`);
  const table = list.length
    ? h("table", {}, h("thead", {}, h("tr", {}, ["Operation", "Target", "Phase", "Step", "Started", "Took", "By", "Error"].map((c) => h("th", {}, c)))),
      h("tbody", {}, list.map((op) => h("tr", { "data-operation": op.id, "data-kind": op.kind },
        h("td", {}, op.kind.replace("_", " ")), h("td", {}, targetCell(op)), h("td", {}, badge(op.phase)),
        h("td", {}, op.step || "—"), h("td", {}, when(op.started_at)), h("td", {}, took(op)),
        h("td", {}, op.requested_by || "—"), h("td", { class: "error" }, op.error ? `${op.error.kind}: ${op.error.message}` : "")))))
    : h("p", { class: "empty" }, "No operations kept.");
  return h("section", { "data-testid": "operations" },
    h("h1", {}, "Operations", target ? [" on ", target] : ""), h("div", { class: "panel" }, table));
}
