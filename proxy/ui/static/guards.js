// Guards & escalations: open escalations with their SLA clocks running (acknowledge from here),
// recent escalations, alert routes and what the last deliveries/drills found, guard events.
import { api, duration, errorBox, h, shortId, time } from "./util.js";

const REFRESH_MS = 5000;

export async function render(main) {
  const open = h("div", { id: "open-escalations" });
  const recent = h("div", { id: "recent-escalations" });
  const routes = h("div", { id: "routes" });
  const events = h("div", { id: "guard-events" });
  const live = h("p", { class: "sr-only", role: "status", "aria-live": "polite" });
  main.replaceChildren(
    h("h1", {}, "Guards & escalations"), live,
    h("section", { "aria-labelledby": "open-h" }, h("h2", { id: "open-h", tabindex: "-1" }, "Open escalations"), open),
    h("section", { "aria-labelledby": "routes-h" }, h("h2", { id: "routes-h" }, "Alert routes"), routes),
    h("section", { "aria-labelledby": "events-h" }, h("h2", { id: "events-h" }, "Guard events"), events),
    h("section", { "aria-labelledby": "recent-h" }, h("h2", { id: "recent-h" }, "Recent escalations"), recent));

  let timer = null;
  let stopped = false;
  async function refresh() {
    clearTimeout(timer);
    await Promise.all([
      loadEscalations(open, recent, live, refresh),
      api("/escalations/health").then((r) => routes.replaceChildren(routeTable(r)), (e) => routes.replaceChildren(errorBox(e))),
      api("/guard-events?limit=100").then((r) => events.replaceChildren(eventTable(r.items)), (e) => events.replaceChildren(errorBox(e))),
    ]);
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }
  const clock = setInterval(() => tickClocks(main), 1000);
  await refresh();
  return () => { stopped = true; clearTimeout(timer); clearInterval(clock); };
}

async function loadEscalations(open, recent, live, refresh) {
  let page;
  try {
    page = await api("/escalations?limit=100");
  } catch (err) {
    open.replaceChildren(errorBox(err));
    return;
  }
  // Keep keyboard focus where it was across the redraw (an Acknowledge button is replaced).
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
  const items = page.items.filter((e) => !e.drill || e.status === "open");
  const openItems = items.filter((e) => e.status === "open");
  open.replaceChildren(openItems.length ? escalationTable(openItems, true, live, refresh) : h("p", { class: "muted" }, "None open."));
  recent.replaceChildren(escalationTable(items.filter((e) => e.status !== "open").slice(0, 30), false));
  if (focused) document.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
}

function escalationTable(items, actions, live, refresh) {
  if (!items.length) return h("p", { class: "muted" }, "None.");
  const cols = ["Opened", "Rule", "Run", "Agent", "Reason", actions ? "Acknowledge within" : "Status", "Notify", actions ? "Action" : "By"];
  return h("div", { class: "scroll" }, h("table", { class: "escalations" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((e) => h("tr", { dataset: { escalation: e.id, status: e.status } },
      h("td", {}, time(e.created_at)), h("td", {}, e.rule),
      h("td", {}, e.run_id ? h("a", { href: `#/runs/${encodeURIComponent(e.run_id)}`, class: "mono" }, shortId(e.run_id)) : "—"),
      h("td", {}, e.agent ?? "—"), h("td", {}, e.reason),
      h("td", {}, actions ? slaClock(e) : h("span", { class: `pill pill-${e.status}` }, e.status)),
      h("td", {}, h("span", { class: e.dead ? "pill pill-dead" : "" }, e.notify_state)),
      h("td", {}, actions ? ackButton(e, live, refresh) : (e.acked_by ?? e.resolved_by ?? "—")))))));
}

function slaClock(e) {
  if (!e.ack_due_at) return "no deadline";
  return h("span", { class: "sla", dataset: { due: e.ack_due_at } }, clockText(e.ack_due_at));
}

function clockText(due) {
  const left = (new Date(due).getTime() - Date.now()) / 1000;
  return left >= 0 ? `${duration(left)} left` : `breached ${duration(-left)} ago`;
}

function tickClocks(main) {
  for (const el of main.querySelectorAll(".sla[data-due]")) {
    el.textContent = clockText(el.dataset.due);
    el.classList.toggle("breached", new Date(el.dataset.due).getTime() < Date.now());
  }
}

function ackButton(e, live, refresh) {
  const button = h("button", { type: "button", dataset: { focusKey: `ack-${e.id}` }, "aria-label": `Acknowledge escalation ${shortId(e.id)} (${e.rule})` }, "Acknowledge");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/escalations/${encodeURIComponent(e.id)}/ack`, { method: "POST", body: { by: "console" } });
      live.textContent = `Escalation ${shortId(e.id)} acknowledged.`;
      document.getElementById("open-h").focus();
      await refresh();
    } catch (err) {
      button.disabled = false;
      button.after(errorBox(err));
    }
  });
  return button;
}

function routeTable(health) {
  if (!health.routes.length) return h("p", { class: "muted" }, "No alert routes are configured (rules files: `routes:`).");
  return h("div", {},
    h("p", {}, `Routes are ${health.status}`, health.checked_at ? [" as of ", time(health.checked_at)] : "", ".",
      health.broken_routes.length ? ` Cannot deliver (dead): ${health.broken_routes.join(", ")}.` : "",
      health.stale_routes.length ? ` Not exercised recently (run \`interlock drill RULE\`): ${health.stale_routes.join(", ")}.` : ""),
    h("div", { class: "scroll" }, h("table", { class: "routes" },
      h("thead", {}, h("tr", {}, ["Route", "Type", "Used by", "Last delivered", "Last failed", "Delivered / failed", "Problems"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, health.routes.map((r) => h("tr", { class: r.problems.length || r.stale ? "bad" : "" },
        h("th", { scope: "row" }, r.name), h("td", {}, r.type), h("td", {}, r.used_by.join(", ") || "—"),
        h("td", {}, time(r.last_delivered_at)), h("td", {}, time(r.last_failed_at)),
        h("td", { class: "n" }, `${r.delivered} / ${r.failed}`),
        h("td", {}, [...r.problems, ...(r.stale ? [`not exercised within ${r.exercise_within}`] : [])].join("; ") || "none")))))));
}

function eventTable(items) {
  if (!items.length) return h("p", { class: "muted" }, "No guard events: every call was allowed.");
  return h("div", { class: "scroll" }, h("table", { class: "guard-events" },
    h("thead", {}, h("tr", {}, ["At", "Rule", "Kind", "Action", "Agent", "Call", "Reason"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((e) => h("tr", {},
      h("td", {}, time(e.at)), h("td", {}, e.rule), h("td", {}, e.kind),
      h("td", {}, h("span", { class: `pill pill-${e.action}` }, e.action)), h("td", {}, e.agent ?? "—"),
      h("td", {}, h("a", { href: `#/calls/${encodeURIComponent(e.call_id)}`, class: "mono" }, shortId(e.call_id))),
      h("td", {}, e.reason))))));
}
