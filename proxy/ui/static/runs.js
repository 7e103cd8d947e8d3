// Runs: a live list (short polling every second while the tab is visible), filters by agent,
// status, flag and time, a run-id prefix search, and totals over the runs shown.
import { api, duration, flagBadges, h, num, query, seconds, time, usd } from "./util.js";

const POLL_MS = 1000;
const LIMIT = 200;
const WINDOWS = [["", "any time"], ["900", "last 15 minutes"], ["3600", "last hour"],
  ["86400", "last 24 hours"], ["604800", "last 7 days"]];

export async function render(main, { query: given }) {
  const state = Object.fromEntries(["agent", "status", "flag", "window", "q"].map((k) => [k, given.get(k) || ""]));
  const agents = await api("/agents").then((r) => r.items.map((a) => a.name)).catch(() => []);
  const body = h("tbody");
  const foot = h("tfoot");
  const summary = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const flagSelect = select("flag", "Flag", [["", "any flag"]], state);
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter runs", onsubmit: (e) => e.preventDefault() },
    field("q", "Run id starts with", h("input", { id: "f-q", name: "q", type: "search", value: state.q,
      autocomplete: "off", spellcheck: "false", placeholder: "e.g. 3f9a" })),
    select("agent", "Agent", [["", "any agent"], ...agents.map((a) => [a, a])], state),
    select("status", "Status", [["", "any status"], ["open", "open"], ["closed", "closed"]], state),
    flagSelect,
    select("window", "Active", WINDOWS, state));
  main.replaceChildren(
    h("h1", {}, "Runs"),
    form,
    summary,
    h("div", { class: "scroll" }, h("table", { class: "runs", id: "runs-table" },
      h("caption", { class: "sr-only" }, "Runs, most recently active first"),
      h("thead", {}, h("tr", {},
        ["Run", "Status", "Started", "Duration", "Calls", "Agents", "Tokens", "Cost", "Flags"]
          .map((c) => h("th", { scope: "col" }, c)))),
      body, foot)));

  let timer = null;
  let stopped = false;
  let controller = null;
  const knownFlags = new Set();

  async function refresh() {
    clearTimeout(timer);
    if (controller) controller.abort();
    controller = new AbortController();
    try {
      const since = state.window ? new Date(Date.now() - Number(state.window) * 1000).toISOString() : "";
      const page = await api(`/runs${query({ agent: state.agent, status: state.status, since, id_prefix: state.q.trim(),
        flag: state.flag, limit: LIMIT })}`, { signal: controller.signal });
      const runs = page.items;
      page.items.forEach((r) => (r.flags || []).forEach((f) => knownFlags.add(f)));
      updateFlags(flagSelect.querySelector("select"), knownFlags, state.flag);
      draw(body, foot, runs);
      const more = page.next_cursor ? ` (the ${LIMIT} most recent; narrow the filters for older runs)` : "";
      summary.textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}${more} · updated ${new Date().toLocaleTimeString()}`;
      document.getElementById("conn").textContent = "";
    } catch (err) {
      if (err.name === "AbortError") return;
      document.getElementById("conn").textContent = `Cannot refresh: ${err.message}`;
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }

  function tick() { if (document.hidden) timer = setTimeout(tick, POLL_MS); else refresh(); }

  form.addEventListener("input", (e) => {
    const el = e.target;
    if (!(el.name in state)) return;
    state[el.name] = el.value;
    const q = new URLSearchParams(Object.entries(state).filter(([, v]) => v)).toString();
    history.replaceState(null, "", `#/runs${q ? `?${q}` : ""}`);
    refresh();
  });
  await refresh();
  return () => { stopped = true; clearTimeout(timer); if (controller) controller.abort(); };
}

function draw(body, foot, runs) {
  body.replaceChildren(...runs.map(row));
  if (!runs.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No runs match. Send traffic through the proxy, or run `interlock demo --serve`.")));
  const total = (k) => runs.reduce((a, r) => a + (r[k] || 0), 0);
  const secs = runs.reduce((a, r) => a + (seconds(r.started_at, r.last_at) || 0), 0);
  foot.replaceChildren(h("tr", {},
    h("th", { scope: "row", colspan: 3 }, "Total shown"),
    h("td", { class: "n", "data-total": "duration" }, duration(secs)),
    h("td", { class: "n", "data-total": "calls" }, num(total("calls"))),
    h("td"), h("td", { class: "n", "data-total": "tokens" }, num(total("tokens"))),
    h("td", { class: "n", "data-total": "cost" }, usd(total("cost_usd"))), h("td")));
}

function row(r) {
  return h("tr", { dataset: { runId: r.id } },
    h("th", { scope: "row" }, h("a", { href: `#/runs/${encodeURIComponent(r.id)}`, class: "mono" }, r.id)),
    h("td", {}, h("span", { class: `pill pill-${r.status}` }, r.status)),
    h("td", {}, time(r.started_at)),
    h("td", { class: "n" }, duration(seconds(r.started_at, r.last_at))),
    h("td", { class: "n" }, num(r.calls)),
    h("td", {}, (r.agents || []).join(", ")),
    h("td", { class: "n" }, num(r.tokens)),
    h("td", { class: "n" }, usd(r.cost_usd)),
    h("td", {}, flagBadges(r.flags)));
}

function field(name, label, control) {
  return h("div", { class: "field" }, h("label", { for: `f-${name}` }, label), control);
}

function select(name, label, options, state) {
  return field(name, label, h("select", { id: `f-${name}`, name },
    options.map(([v, text]) => h("option", { value: v, selected: v === state[name] }, text))));
}

function updateFlags(el, known, current) {
  const have = new Set([...el.options].map((o) => o.value));
  for (const f of [...known].sort()) if (!have.has(f)) el.append(h("option", { value: f, selected: f === current }, f));
}
