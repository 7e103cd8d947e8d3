// Run view: facts and cascade root causes, the orchestration graph (cytoscape + dagre: agents
// sized by tokens with edge kinds and counts, or every call), a timeline with one swimlane per
// agent, and the calls table.  Calls link to the inspector (#/calls/{id}).
import cytoscape from "./vendor/cytoscape.esm.min.mjs";
import dagre from "./vendor/cytoscape-dagre.min.mjs";
import { api, fact, mount, duration, flagBadges, flagClass, h, ms, num, query, s, seconds, shortId, time, usd } from "./util.js";

cytoscape.use(dagre);

const KINDS = ["handoff", "return", "tool", "human", "continuation"];
const PALETTE = ["#475569", "#0e7490", "#4d7c0f", "#a16207", "#7e22ce", "#be185d", "#1d4ed8", "#b45309", "#047857", "#6d28d9"];

function agentColours(graph) {
  return new Map(graph.agents.map((a, i) => [a.name, PALETTE[i % PALETTE.length]]));
}

export async function render(main, { id }) {
  const path = `/runs/${encodeURIComponent(id)}`;
  const [run, graph] = await Promise.all([api(path), api(`${path}/graph`)]);
  const runId = run.id;
  const [calls, events] = await Promise.all([
    api(`/calls${query({ run_id: runId, limit: 1000 })}`).then((r) => r.items),
    api(`/guard-events${query({ run_id: runId, limit: 1000 })}`).then((r) => r.items).catch(() => []),
  ]);
  const kindsByCall = guardKinds(events);
  const rows = new Map(calls.map((c) => [c.id, c]));
  const view = { mode: "agents", cy: null };
  const holder = h("div", { class: "graph", id: "graph", role: "img",
    "aria-label": `Orchestration graph: ${graph.agents.length} agents, ${graph.nodes.length} calls, ${graph.edges.length} edges. The same graph is listed as a table below.` });
  const listing = h("div", { id: "graph-table" });
  const modes = h("fieldset", { class: "modes" }, h("legend", {}, "Show"),
    ...[["agents", "Agents (sized by tokens)"], ["calls", "Every call"]].map(([v, label]) =>
      h("label", {}, h("input", { type: "radio", name: "graph-mode", value: v, checked: v === view.mode,
        onchange: () => { view.mode = v; draw(); } }), ` ${label}`)));

  mount(main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "Runs"), " / ", shortId(runId)),
    h("h1", {}, "Run ", h("span", { class: "mono" }, runId)),
    facts(run, graph),
    causes(run),
    h("section", { "aria-labelledby": "graph-h" }, h("div", { class: "section-head" },
      h("h2", { id: "graph-h" }, "Orchestration graph"), modes, legend()), holder,
      h("details", {}, h("summary", {}, "Graph as a table"), listing)),
    h("section", { "aria-labelledby": "tl-h" }, h("h2", { id: "tl-h" }, "Timeline"),
      timeline(graph, rows, kindsByCall), marksLegend()),
    h("section", { "aria-labelledby": "calls-h" }, h("h2", { id: "calls-h" }, `Calls (${calls.length})`),
      callsTable(graph, rows, kindsByCall)));

  function draw() {
    if (view.cy) view.cy.destroy();
    const elements = view.mode === "agents" ? agentElements(graph) : callElements(graph, rows, kindsByCall);
    view.cy = cytoscape({ container: holder, elements, style: STYLE, minZoom: 0.05, maxZoom: 2.5,
      layout: { name: "dagre", rankDir: "LR", nodeSep: 40, rankSep: 110, padding: 30, animate: false } });
    if (view.cy.zoom() > 1.6) view.cy.zoom({ level: 1.6, renderedPosition: { x: holder.clientWidth / 2, y: holder.clientHeight / 2 } });
    view.cy.on("tap", "node[call]", (e) => { location.hash = `#/calls/${encodeURIComponent(e.target.id())}`; });
    holder.dataset.mode = view.mode;
    holder.dataset.nodes = String(view.cy.nodes().length);
    holder.dataset.edges = String(view.cy.edges().length);
    listing.replaceChildren(graphTable(view.mode, graph));
    window.interlock = { cy: view.cy, graph, mode: view.mode };  // for tests and the curious (devtools)
  }
  draw();
  return () => { if (view.cy) view.cy.destroy(); window.interlock = undefined; };
}

function guardKinds(events) {
  const out = new Map();
  for (const e of events) {
    const list = out.get(e.call_id) || [];
    list.push(e);
    out.set(e.call_id, list);
  }
  return out;
}

function facts(run, graph) {
  return h("dl", { class: "facts" },
    fact("Status", h("span", { class: `pill pill-${run.status}` }, run.status)),
    fact("Started", time(run.started_at)),
    fact("Duration", duration(seconds(run.started_at, run.last_at))),
    fact("Calls", num(run.calls ?? graph.nodes.length)),
    fact("Tokens", num(run.tokens)),
    fact("Cost", usd(run.cost_usd)),
    fact("Agents", graph.agents.map((a) => a.name).join(", ") || "—"),
    fact("Flags", (run.flags || []).length ? flagBadges(run.flags) : "none"));
}

// Cascade: each root cause (a faulty output others consumed) and what it reached downstream.
function causes(run) {
  const roots = run.root_causes || [];
  const radius = run.blast_radius || {};
  if (!roots.length && !radius.calls) return null;
  return h("section", { class: "cascade", "aria-labelledby": "cascade-h" },
    h("h2", { id: "cascade-h" }, "Cascade"),
    h("p", {}, `Blast radius: ${reach(radius)}.`),
    h("ul", {}, roots.map((r) => h("li", {},
      h("a", { href: `#/calls/${encodeURIComponent(r.call_id)}`, class: "mono" }, shortId(r.call_id)),
      ` (${r.agent || "?"}) is a root cause`, r.faults && r.faults.length ? ` (${r.faults.join(", ")})` : "",
      r.downstream ? `; downstream: ${reach(r.downstream)}` : ""))));
}

function reach(radius) {
  const agents = radius.agents || [];
  return `${num(radius.calls || 0)} tainted call(s)${agents.length ? ` of ${agents.join(", ")}` : ""}, ` +
    `${num(radius.tokens || 0)} tokens, depth ${radius.max_depth ?? 0}`;
}

function marksLegend() {
  const marks = [["failed", "refused or failed", "red bar"], ["loop", "loop", "orange outline"],
    ["budget", "budget refusal", "red bar"], ["context", "context overflow", "purple outline"],
    ["truncated", "truncated handoff", "dashed outline"], ["tainted", "tainted", "hatched bar"],
    ["cascade", "cascade root", "crimson outline"]];
  return h("ul", { class: "legend marks", "aria-label": "Marks on calls" },
    marks.map(([k, label, look]) => h("li", {}, h("span", { class: `flag flag-${k}` }, label), ` ${look}`)));
}

function legend() {
  return h("ul", { class: "legend", "aria-label": "Edge kinds" },
    KINDS.map((k) => h("li", {}, h("span", { class: `swatch edge-${k}`, "aria-hidden": "true" }), k)));
}

// ------------------------------------------------------------------------------------ graph

function agentElements(graph) {
  const max = Math.max(1, ...graph.agents.map((a) => a.tokens));
  const colour = agentColours(graph);
  const nodes = graph.agents.map((a) => ({ data: { id: `agent:${a.name}`, name: a.name, label: `${a.name}\n${num(a.tokens)} tok · ${a.calls} call${a.calls === 1 ? "" : "s"}`,
    size: 30 + 60 * Math.sqrt(a.tokens / max), agent: a.name, colour: colour.get(a.name) } }));
  const known = new Set(graph.agents.map((a) => a.name));
  for (const e of graph.agent_edges) {
    if (!known.has(e.source)) { known.add(e.source); nodes.push({ data: { id: `agent:${e.source}`, name: e.source, label: e.source, size: 26, agent: e.source, pseudo: 1 } }); }
  }
  const edges = graph.agent_edges.map((e, i) => ({ data: { id: `ae${i}`, source: `agent:${e.source}`, target: `agent:${e.target}`,
    kind: e.kind, count: e.count, label: e.count > 1 ? `${e.kind} ×${e.count}` : e.kind } }));
  return [...nodes, ...edges];
}

function callElements(graph, rows, kindsByCall) {
  const tokens = (id) => { const r = rows.get(id) || {}; return (r.input_tokens || 0) + (r.output_tokens || 0); };
  const max = Math.max(1, ...graph.nodes.map((n) => tokens(n.id)));
  const colour = agentColours(graph);
  const nodes = graph.nodes.map((n) => {
    const row = rows.get(n.id) || {};
    return { data: { id: n.id, call: 1, agent: n.agent, colour: colour.get(n.agent), label: `${n.agent}\n${shortId(n.id)}`,
      size: 18 + 30 * Math.sqrt(tokens(n.id) / max) }, classes: markClasses(n.flags, row, n.status, kindsByCall.get(n.id)).join(" ") };
  });
  const seen = new Set(nodes.map((n) => n.data.id));
  for (const e of graph.edges) {
    if (!seen.has(e.source)) { seen.add(e.source); nodes.push({ data: { id: e.source, label: "human", size: 18, pseudo: 1 } }); }
  }
  const edges = graph.edges.map((e, i) => ({ data: { id: `e${i}`, source: e.source, target: e.target, kind: e.kind, label: e.kind } }));
  return [...nodes, ...edges];
}

function markClasses(flags, row, status, events) {
  const out = new Set();
  const kinds = Object.fromEntries((events || []).map((e) => [e.rule, e.kind]));
  for (const f of flags || []) out.add(`mark-${flagClass(f, kinds[f])}`);
  for (const e of events || []) out.add(`mark-${flagClass(e.rule, e.kind)}`);
  if ((flags || []).includes("cascade_root")) out.add("root");
  if (row.tainted_by && row.tainted_by.length) out.add("tainted");
  if (status && status !== "ok") out.add("failed");
  return [...out];
}

function graphTable(mode, graph) {
  const nodes = mode === "agents"
    ? graph.agents.map((a) => h("tr", { dataset: { node: a.name } }, h("td", {}, a.name), h("td", { class: "n" }, num(a.calls)), h("td", { class: "n" }, num(a.tokens))))
    : graph.nodes.map((n) => h("tr", { dataset: { node: n.id } }, h("td", {}, h("a", { href: `#/calls/${encodeURIComponent(n.id)}`, class: "mono" }, shortId(n.id))), h("td", {}, n.agent), h("td", {}, n.status ?? "—")));
  const edges = (mode === "agents" ? graph.agent_edges : graph.edges).map((e) => h("tr", { dataset: { source: e.source, target: e.target, kind: e.kind } },
    h("td", {}, mode === "agents" ? e.source : shortId(e.source)), h("td", {}, e.kind), h("td", {}, mode === "agents" ? e.target : shortId(e.target)),
    h("td", { class: "n" }, mode === "agents" ? num(e.count) : evidenceSummary(e.evidence))));
  return h("div", { class: "two" },
    h("table", { class: "nodes" }, h("caption", {}, mode === "agents" ? "Agents" : "Calls"),
      h("thead", {}, h("tr", {}, (mode === "agents" ? ["Agent", "Calls", "Tokens"] : ["Call", "Agent", "Status"]).map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, nodes)),
    h("table", { class: "edges" }, h("caption", {}, "Edges"),
      h("thead", {}, h("tr", {}, ["From", "Kind", "To", mode === "agents" ? "Count" : "Evidence"].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, edges)));
}

export function evidenceSummary(ev) {
  if (!ev || typeof ev !== "object") return "—";
  const parts = [];
  if (ev.coverage !== undefined) parts.push(`coverage ${Math.round(Number(ev.coverage) * 100)}%`);
  if (ev.matched !== undefined) parts.push(`${ev.matched} matched passage fingerprint(s)`);
  if (ev.chars !== undefined) parts.push(`${ev.chars} chars`);
  if (ev.via) parts.push(`via ${ev.via}`);
  if (ev.truncated) parts.push("TRUNCATED");
  return parts.join(", ") || Object.keys(ev).slice(0, 3).join(", ") || "—";
}

const EDGE_COLORS = { handoff: "#2563eb", return: "#059669", tool: "#9333ea", human: "#d97706", continuation: "#94a3b8" };
const STYLE = [
  { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "font-size": 12, "text-valign": "bottom", "text-margin-y": 4,
    width: "data(size)", height: "data(size)", "background-color": "#475569", color: "#0f172a", "text-background-color": "#fff",
    "text-background-opacity": 0.8, "text-background-padding": 2 } },
  { selector: "node[colour]", style: { "background-color": "data(colour)" } },
  { selector: "node[pseudo]", style: { shape: "diamond", "background-color": "#d97706" } },
  { selector: "node.failed", style: { "background-color": "#dc2626" } },
  { selector: "node.mark-loop", style: { "border-width": 3, "border-color": "#ea580c" } },
  { selector: "node.mark-budget", style: { "border-width": 3, "border-color": "#dc2626", shape: "octagon" } },
  { selector: "node.mark-context", style: { "border-width": 3, "border-color": "#7c3aed" } },
  { selector: "node.tainted", style: { "background-color": "#f472b6" } },
  { selector: "node.root", style: { "border-width": 5, "border-color": "#be123c", shape: "star" } },
  { selector: "edge", style: { width: 2, "curve-style": "bezier", "target-arrow-shape": "triangle", label: "data(label)", "font-size": 10,
    "text-rotation": "autorotate", "text-background-color": "#fff", "text-background-opacity": 0.85, "line-color": "#94a3b8", "target-arrow-color": "#94a3b8" } },
  ...Object.entries(EDGE_COLORS).map(([k, c]) => ({ selector: `edge[kind = "${k}"]`, style: { "line-color": c, "target-arrow-color": c } })),
  { selector: 'edge[kind = "continuation"]', style: { "line-style": "dashed" } },
  { selector: "edge[count > 1]", style: { width: "mapData(count, 1, 20, 2, 8)" } },
];

// --------------------------------------------------------------------------------- timeline

function timeline(graph, rows, kindsByCall) {
  const lanes = [...new Set(graph.nodes.map((n) => n.agent))];
  if (!graph.nodes.length) return h("p", { class: "muted" }, "No calls.");
  const span = (n) => {
    const r = rows.get(n.id) || {};
    const a = new Date(n.started_at).getTime();
    const b = r.ended_at ? new Date(r.ended_at).getTime() : a + (r.latency_ms || 0);
    return [a, Math.max(b, a)];
  };
  const spans = new Map(graph.nodes.map((n) => [n.id, span(n)]));
  const t0 = Math.min(...[...spans.values()].map((x) => x[0]));
  const t1 = Math.max(t0 + 1, ...[...spans.values()].map((x) => x[1]));
  const W = 1000, LABEL = 150, LANE = 34, TOP = 22;
  const x = (t) => LABEL + ((t - t0) / (t1 - t0)) * (W - LABEL - 10);
  const laneOf = new Map(lanes.map((a, i) => [a, i]));
  const colour = agentColours(graph);
  const y = (agent) => TOP + laneOf.get(agent) * LANE;
  const H = TOP + lanes.length * LANE + 6;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "timeline", role: "group", "aria-label": `Timeline of ${graph.nodes.length} calls in ${lanes.length} swimlanes` },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" })),
      s("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        s("rect", { width: 6, height: 6, fill: "#f9a8d4" }), s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#be185d", "stroke-width": 2 }))),
    s("text", { x: LABEL, y: 14, class: "axis" }, "0 s"),
    s("text", { x: W - 10, y: 14, class: "axis", "text-anchor": "end" }, duration((t1 - t0) / 1000)),
    lanes.map((agent, i) => s("g", { class: "lane" },
      s("rect", { x: 0, y: y(agent), width: W, height: LANE, class: i % 2 ? "lane-bg odd" : "lane-bg" }),
      s("text", { x: 6, y: y(agent) + LANE / 2 + 4, class: "lane-label" }, agent.length > 20 ? `${agent.slice(0, 19)}…` : agent))));
  const agentOf = new Map(graph.nodes.map((n) => [n.id, n.agent]));
  for (const e of graph.edges) {
    if (e.kind === "continuation" || !spans.has(e.source)) continue;
    svg.append(s("line", { x1: x(spans.get(e.source)[1]), y1: y(agentOf.get(e.source)) + LANE / 2, x2: x(spans.get(e.target)[0]), y2: y(agentOf.get(e.target)) + LANE / 2,
      class: `arrow edge-${e.kind}`, "marker-end": "url(#arrow)" }));
  }
  for (const n of graph.nodes) {
    const [a, b] = spans.get(n.id);
    const row = rows.get(n.id) || {};
    const classes = markClasses(n.flags, row, n.status, kindsByCall.get(n.id));
    const label = `${n.agent} call ${shortId(n.id)}: ${n.status ?? "?"}, ${ms(row.latency_ms)}${(n.flags || []).length ? `, flags ${n.flags.join(", ")}` : ""}`;
    svg.append(s("a", { href: `#/calls/${encodeURIComponent(n.id)}`, class: `bar ${classes.join(" ")}`, "aria-label": label, "data-call": n.id },
      s("title", {}, label),
      s("rect", { x: x(a), y: y(n.agent) + 7, width: Math.max(4, x(b) - x(a)), height: LANE - 14, rx: 3, fill: colour.get(n.agent) })));
  }
  return h("div", { class: "scroll" }, svg);
}

// ------------------------------------------------------------------------------------ calls

function callsTable(graph, rows, kindsByCall) {
  return h("div", { class: "scroll" }, h("table", { class: "calls" },
    h("thead", {}, h("tr", {}, ["Call", "Started", "Agent", "Model", "Status", "Tokens in / out", "Latency", "Flags"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, graph.nodes.map((n) => {
      const r = rows.get(n.id) || {};
      const kinds = Object.fromEntries((kindsByCall.get(n.id) || []).map((e) => [e.rule, e.kind]));
      const extra = r.tainted_by && r.tainted_by.length ? [h("span", { class: "flag flag-tainted" }, "tainted")] : [];
      return h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `#/calls/${encodeURIComponent(n.id)}`, class: "mono" }, shortId(n.id))),
        h("td", {}, time(n.started_at)), h("td", {}, n.agent), h("td", {}, n.model ?? "—"),
        h("td", {}, h("span", { class: `pill pill-${n.status}` }, n.status ?? "—")),
        h("td", { class: "n" }, `${num(r.input_tokens)} / ${num(r.output_tokens)}`),
        h("td", { class: "n" }, ms(r.latency_ms)),
        h("td", {}, flagBadges(n.flags, kinds), extra));
    }))));
}
