// Call inspector: what was asked and answered (as stored under the content policy), tokens
// counted by Interlock vs reported by the provider, timings, guard verdicts, and the edges that
// link this call to others with their evidence (coverage, matched passage).
import { api, fact, mount, flagBadges, h, ms, num, pretty, shortId, time, usd } from "./util.js";
import { evidenceSummary } from "./run.js";

export async function render(main, { id }) {
  const call = await api(`/calls/${encodeURIComponent(id)}`);
  const graph = call.run_id ? await api(`/runs/${encodeURIComponent(call.run_id)}/graph`).catch(() => null) : null;
  const edges = graph ? graph.edges.filter((e) => e.source === call.id || e.target === call.id) : [];
  const agentOf = new Map((graph ? graph.nodes : []).map((n) => [n.id, n.agent]));
  mount(main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "Runs"), " / ",
      call.run_id ? h("a", { href: `#/runs/${encodeURIComponent(call.run_id)}` }, shortId(call.run_id)) : "no run", " / ", shortId(call.id)),
    h("h1", {}, "Call ", h("span", { class: "mono" }, call.id)),
    overview(call),
    h("section", { "aria-labelledby": "tok-h" }, h("h2", { id: "tok-h" }, "Tokens"), tokens(call)),
    h("section", { "aria-labelledby": "guard-h" }, h("h2", { id: "guard-h" }, `Guard verdicts (${call.guard_events.length})`), verdicts(call.guard_events)),
    h("section", { "aria-labelledby": "edge-h" }, h("h2", { id: "edge-h" }, `Edges (${edges.length})`), edgeList(call, edges, agentOf)),
    h("section", { "aria-labelledby": "content-h", class: "content" }, h("h2", { id: "content-h" }, "Content"),
      call.content_truncated ? h("p", { class: "note" }, "Stored content was truncated by the content policy.") : null,
      content("Request", call.request_content, "request"), content("Response", call.response_content, "response")));
}

function overview(c) {
  return h("dl", { class: "facts" },
    fact("Agent", `${c.agent ?? "—"}${c.agent_source ? ` (${c.agent_source})` : ""}`),
    fact("Status", [h("span", { class: `pill pill-${c.outcome}` }, c.outcome ?? "—"), ` HTTP ${c.status ?? "—"}`]),
    fact("Provider", `${c.provider} · ${c.operation}${c.stream ? " · streamed" : ""}`),
    fact("Model", c.model_served && c.model_served !== c.model_requested ? `${c.model_requested} → ${c.model_served}` : (c.model_requested ?? c.model_served ?? "—")),
    fact("Started", time(c.started_at)),
    fact("Latency", ms(c.latency_ms)),
    fact("Time to first byte", ms(c.ttfb_ms)),
    fact("Finish", c.finish_reason ?? "—"),
    fact("Cost", usd(c.cost_usd)),
    fact("Path", h("span", { class: "mono" }, `${c.method} ${c.path}`)),
    fact("Flags", (c.flags || []).length ? flagBadges(c.flags) : "none"),
    c.tainted_by && c.tainted_by.length ? fact("Tainted by", c.tainted_by.map((t) => h("a", { href: `#/calls/${encodeURIComponent(t)}`, class: "mono" }, `${shortId(t)} `))) : null,
    c.error ? fact("Error", h("span", { class: "error-text" }, c.error)) : null);
}

function tokens(c) {
  const diff = c.input_tokens != null && c.input_tokens_counted != null ? c.input_tokens_counted - c.input_tokens : null;
  return h("table", { class: "kv" }, h("tbody", {},
    h("tr", {}, h("th", { scope: "row" }, "Input, reported by the provider"), h("td", { class: "n" }, num(c.input_tokens))),
    h("tr", {}, h("th", { scope: "row" }, "Input, counted by Interlock"), h("td", { class: "n" }, num(c.input_tokens_counted))),
    h("tr", {}, h("th", { scope: "row" }, "Difference (counted − reported)"), h("td", { class: "n" }, diff === null ? "—" : `${diff > 0 ? "+" : ""}${num(diff)}`)),
    h("tr", {}, h("th", { scope: "row" }, "Output"), h("td", { class: "n" }, num(c.output_tokens))),
    h("tr", {}, h("th", { scope: "row" }, "Cached input"), h("td", { class: "n" }, num(c.cached_tokens))),
    h("tr", {}, h("th", { scope: "row" }, "Reasoning"), h("td", { class: "n" }, num(c.reasoning_tokens)))));
}

function verdicts(events) {
  if (!events.length) return h("p", { class: "muted" }, "Every guard allowed this call.");
  return h("table", {}, h("thead", {}, h("tr", {}, ["Rule", "Kind", "Action", "Reason", "Numbers"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, events.map((e) => h("tr", {},
      h("td", {}, e.rule), h("td", {}, e.kind), h("td", {}, h("span", { class: `pill pill-${e.action}` }, e.action)),
      h("td", {}, e.reason), h("td", {}, h("code", {}, JSON.stringify(e.data)))))));
}

function edgeList(call, edges, agentOf) {
  if (!edges.length) return h("p", { class: "muted" }, "No edges: nothing links this call to another.");
  return h("ul", { class: "edges-list" }, edges.map((e) => {
    const incoming = e.target === call.id;
    const other = incoming ? e.source : e.target;
    const otherLabel = other.startsWith("human") ? "human input" : h("a", { href: `#/calls/${encodeURIComponent(other)}`, class: "mono" }, shortId(other));
    const ev = e.evidence || {};
    return h("li", { dataset: { kind: e.kind } },
      h("p", {}, h("span", { class: `kind edge-${e.kind}` }, e.kind), incoming ? " from " : " to ", otherLabel,
        agentOf.get(other) ? ` (${agentOf.get(other)})` : "", ` — ${evidenceSummary(ev)}`),
      typeof ev.passage === "string" ? h("blockquote", {}, ev.passage) : null,
      h("details", {}, h("summary", {}, "Evidence"), h("pre", {}, JSON.stringify(ev, null, 2))));
  }));
}

function content(label, text, id) {
  const body = pretty(text);
  return h("div", { class: "pane" }, h("h3", { id: `${id}-h` }, label),
    body === null ? h("p", { class: "muted" }, "Not stored (the content policy keeps metadata only).")
      : h("pre", { tabindex: "0", "aria-labelledby": `${id}-h`, id: `${id}-content` }, body));
}
