// The dashboard's shell: routes the URL's fragment to a view, redraws the
// view when the API's watch stream says something changed, shows what an
// action did, and asks for a token when the server wants one.

import { ApiError, call, setToken, token, watch } from "./api.js";
import * as views from "./views.js";

const main = document.getElementById("view");
const notice = document.getElementById("notice");
const live = document.getElementById("live");

/** What the views call after an action: a notice, then a redraw. */
const ui = {
  done(message) {
    show(message, "info");
    render();
  },
  failed(error) {
    if (error instanceof ApiError && error.status === 401) return login(error.message);
    show(error instanceof ApiError ? `${error.kind}: ${error.message}` : String(error), "error");
    render();
  },
};

function show(message, kind) {
  notice.textContent = message;
  notice.className = `notice ${kind === "info" ? "info" : ""}`;
  notice.hidden = false;
  notice.dataset.kind = kind;
}

/**
 * The view the fragment names: #/, #/nodes, #/nodes/NAME, #/instances?type=...,
 * #/instances/NAME, #/images, #/templates, #/operations?target=NAME.
 */
function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  // Leaving an instance's page closes its console.
  views.closeConsole(parts[0] === "instances" ? parts[1] : undefined);
  if (parts[0] === "nodes" && parts[1]) return { name: "nodes", load: () => views.node(parts[1]) };
  if (parts[0] === "nodes") return { name: "nodes", load: () => views.nodes() };
  if (parts[0] === "instances" && parts[1]) return { name: "instances", load: () => views.instance(parts[1], ui) };
  if (parts[0] === "instances") return { name: "instances", load: () => views.instances(params, ui) };
  if (parts[0] === "images") return { name: "images", load: () => views.images() };
  if (parts[0] === "templates") return { name: "templates", load: () => views.templates() };
  if (parts[0] === "operations") return { name: "operations", load: () => views.operations(params) };
  return { name: "overview", load: () => views.overview() };
}

let drawing = 0;

/** Draws the current view; a later draw wins over a slower earlier one. */
async function render() {
  const current = route();
  const mine = ++drawing;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.view === current.name);
  try {
    const view = await current.load();
    if (mine !== drawing) return;
    // Keep what the user is typing in a form across a live redraw: a form
    // the view would rebuild waits for the next one; the console, which
    // redraws keep, gets its focus and caret back.
    const focused = document.activeElement;
    if (focused && main.contains(focused) && focused.form && !views.inConsole(focused)) return;
    const caret = focused && "selectionStart" in focused ? [focused.selectionStart, focused.selectionEnd] : null;
    main.replaceChildren(view);
    views.mountConsole(main);
    if (focused && focused !== document.activeElement && focused.isConnected) {
      focused.focus();
      if (caret && caret[0] !== null) focused.setSelectionRange(...caret);
    }
  } catch (error) {
    if (mine !== drawing) return;
    if (error instanceof ApiError && error.status === 401) return login(error.message);
    main.replaceChildren(views.h("section", { class: "panel error", "data-testid": "view-error" },
      error instanceof ApiError ? `${error.kind}: ${error.message}` : String(error)));
  }
}

let redraw = null;

/** Redraws shortly after a burst of changes, once. */
function changed() {
  clearTimeout(redraw);
  redraw = setTimeout(render, 150);
}

/** Follows the API's watch streams for as long as the page is open. */
async function follow() {
  for (;;) {
    try {
      await watch((name) => {
        if (name === "instance" || name === "node") changed();
      }, () => {
        live.textContent = "live";
        live.classList.add("on");
        // Whatever changed while we were away.
        changed();
      });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        live.textContent = "signed out";
        live.classList.remove("on");
        return;
      }
    }
    live.textContent = "reconnecting";
    live.classList.remove("on");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

const dialog = document.getElementById("login");

function login(message) {
  setToken(null);
  document.getElementById("login-error").textContent = message || "";
  if (!dialog.open) dialog.showModal();
}

document.getElementById("login-form").addEventListener("submit", () => {
  setToken(document.getElementById("token").value.trim());
  render();
  follow();
});

async function start() {
  window.addEventListener("hashchange", () => {
    // A notice belongs to the page it was shown on.
    notice.hidden = true;
    render();
  });
  const session = await call("GET", "/api/session");
  if (session.token_required && !token()) return login();
  render();
  follow();
}

start().catch((error) => show(String(error), "error"));
