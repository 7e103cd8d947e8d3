// The console's router: the hash names the view (#/runs, #/runs/{id}, #/calls/{id}, #/guards).
// Each view module exports render(main, params) and may return a function that stops it
// (timers, the graph); the router calls it before the next view.
import { errorBox, h } from "./util.js";
import * as runs from "./runs.js";
import * as run from "./run.js";
import * as call from "./call.js";
import * as guards from "./guards.js";

const ROUTES = [
  [/^#\/runs\/([^/?]+)$/, run, "runs", (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^#\/calls\/([^/?]+)$/, call, "runs", (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^#\/guards$/, guards, "guards", () => ({})],
  [/^#\/runs(?:\?(.*))?$/, runs, "runs", (m) => ({ query: new URLSearchParams(m[1] || "") })],
];

let stop = null;
let generation = 0;

async function route() {
  const hash = location.hash || "#/runs";
  if (stop) { stop(); stop = null; }
  const main = document.getElementById("main");
  const mine = ++generation;
  for (const [pattern, view, section, params] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    markSection(section);
    main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    try {
      const stopper = await view.render(main, params(m));
      if (mine !== generation) { if (stopper) stopper(); return; }
      stop = stopper || null;
    } catch (err) {
      if (mine === generation) main.replaceChildren(errorBox(err));
    }
    focusMain(main);
    return;
  }
  location.replace("#/runs");
}

function markSection(section) {
  for (const a of document.querySelectorAll("nav a[data-section]")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// After a view change, move focus to the view's heading so keyboard and screen-reader users
// start at the new content (not at the link they left behind).
function focusMain(main) {
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}

window.addEventListener("hashchange", route);
route();
