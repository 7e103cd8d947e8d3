// Small shared helpers: API access, DOM building, formatting.  No framework: views build DOM
// with h() and never insert API text as HTML (everything goes through textContent).

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

// GET (or POST with a JSON body) under /api with the browser's credentials (same-origin Basic,
// or none on loopback).
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, credentials: "same-origin", headers: { accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const r = await fetch(`/api${path}`, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) throw new ApiError(r.status, (data && data.detail) || text || r.statusText);
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// h("a", {href: "#"}, "text", child) → element.  Attributes starting with "on" are listeners;
// `class`, `dataset` and boolean attributes are handled; strings become text nodes.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  append(el, children);
  return el;
}

// Ids are time-ordered (their start is the clock), so the distinguishing part is the end.
export function shortId(id) {
  if (!id) return "—";
  const t = String(id);
  return t.length > 14 ? `…${t.slice(-10)}` : t;
}

// Replace el's children with the given ones, skipping null/undefined/false (optional parts).
export function mount(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

// One <dt>/<dd> pair, wrapped (allowed in <dl>) so the pair stays together in the grid.
export function fact(term, value) { return h("div", {}, h("dt", {}, term), h("dd", {}, value)); }
export function num(n) { return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"); }
export function usd(n) {
  if (n === null || n === undefined) return "—";
  return n < 0.01 && n > 0 ? `$${n.toFixed(5)}` : `$${n.toFixed(n < 1 ? 4 : 2)}`;
}
export function ms(n) {
  if (n === null || n === undefined) return "—";
  return n < 1000 ? `${Math.round(n)} ms` : duration(n / 1000);
}
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const neg = seconds < 0 ? "−" : "";
  let t = Math.abs(seconds);
  if (t < 60) return `${neg}${t.toFixed(t < 10 ? 1 : 0)} s`;
  const d = Math.floor(t / 86400); t -= d * 86400;
  const hh = Math.floor(t / 3600); t -= hh * 3600;
  const mm = Math.floor(t / 60); const ss = Math.floor(t - mm * 60);
  if (d) return `${neg}${d}d ${hh}h`;
  if (hh) return `${neg}${hh}h ${String(mm).padStart(2, "0")}m`;
  return `${neg}${mm}m ${String(ss).padStart(2, "0")}s`;
}
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}
export function time(iso) { return iso ? h("time", { datetime: iso, title: iso }, when(iso)) : "—"; }
export function seconds(a, b) {
  if (!a || !b) return null;
  return (new Date(b).getTime() - new Date(a).getTime()) / 1000;
}

// What a call or run flag means, for the legend and the marks (loops, budgets, handoffs, overflow).
export function flagClass(flag, kind) {
  const f = String(flag).toLowerCase();
  if (kind === "budget" || f.includes("budget")) return "budget";
  if (kind === "context" || f.includes("context") || f.includes("overflow")) return "context";
  if (kind === "loop" || /retry|repeat|loop|progress|ping|pong|redelegat|ceiling/.test(f)) return "loop";
  if (f.includes("truncat")) return "truncated";
  if (f === "cascade_root" || f.startsWith("fault:")) return "cascade";
  if (kind === "escalation" || f.includes("escalat")) return "escalation";
  return "other";
}

export function flagBadges(flags, kinds = {}) {
  return (flags || []).map((f) => h("span", { class: `flag flag-${flagClass(f, kinds[f])}` }, f));
}

export function errorBox(err) {
  const msg = err instanceof ApiError ? `The API answered ${err.status}: ${err.detail}` : String(err);
  return h("p", { class: "error", role: "alert" }, msg);
}

export function pretty(text) {
  if (text === null || text === undefined) return null;
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return String(text); }
}
