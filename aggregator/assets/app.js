// tapflow dashboard: reads the JSON API (/api/...) every few seconds and renders it.
// Every value from the API is put in the page as text (textContent, setAttribute on SVG
// geometry), never as HTML: a session's or a collector's strings cannot become markup.
"use strict";

const REFRESH_MS = 2000;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const SVG_NS = "http://www.w3.org/2000/svg";
const errors = [];

function noteError(text) {
  errors.push(String(text));
  const pre = document.getElementById("errors");
  if (pre) {
    pre.hidden = false;
    pre.textContent = errors.join("\n");
  }
  document.body.dataset.errors = String(errors.length);
}
window.addEventListener("error", (e) => noteError("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => noteError("rejection: " + e.reason));
document.addEventListener("securitypolicyviolation", (e) => noteError("csp: " + e.violatedDirective));

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function get(path) {
  const r = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (!r.ok) {
    let why = r.status + "";
    try { why += " " + (await r.json()).error; } catch (_) { /* no JSON body */ }
    throw new Error(path + ": " + why);
  }
  return r.json();
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(3);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function human(n) {
  const units = ["", "k", "M", "G", "T"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + units[i];
}

function time(secs) {
  return new Date(secs * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// Columns: `preferred` first (those present), then any other key in first-seen order.
function columnsOf(rows, preferred) {
  const seen = new Set();
  const cols = [];
  for (const c of preferred || []) if (rows.some((r) => c in r)) { cols.push(c); seen.add(c); }
  for (const r of rows) for (const k of Object.keys(r)) if (!seen.has(k)) { seen.add(k); cols.push(k); }
  return cols;
}

// Numbers that are names (ports, incarnations, ids), shown without thousands separators.
const PLAIN = /(_p|incarnation|member|shard|seq)$/;

// A table of `rows` (objects) in `target`; `extra(row, tr)` may add cells.
function table(target, rows, opts) {
  const o = opts || {};
  const box = $(target);
  box.replaceChildren();
  if (!rows.length) { box.append(el("p", o.empty || "none", "muted")); return; }
  const cols = o.columns || columnsOf(rows, o.preferred);
  const t = el("table");
  const head = el("tr");
  for (const c of cols) head.append(el("th", c));
  if (o.extraHead) head.append(el("th", o.extraHead));
  const thead = el("thead");
  thead.append(head);
  t.append(thead);
  const body = el("tbody");
  for (const r of rows) {
    const tr = el("tr");
    if (r.uid !== undefined) tr.dataset.uid = String(r.uid);
    for (const c of cols) {
      const v = r[c];
      const custom = o.format && o.format[c];
      const td = el("td", custom ? custom(v) : PLAIN.test(c) && v !== null && v !== undefined ? String(v) : fmt(v));
      if (c === "uid") td.className = "uid";
      tr.append(td);
    }
    if (o.extra) o.extra(r, tr);
    body.append(tr);
  }
  t.append(body);
  box.append(t);
}

// A line chart of `series` ([{name, points: [[x, y], ...]}]) in an SVG of 600x200.
function chart(svgId, legendId, series, unit, empty) {
  const svg = $(svgId);
  svg.replaceChildren();
  const legend = $(legendId);
  legend.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    const t = document.createElementNS(SVG_NS, "text");
    t.setAttribute("x", "300"); t.setAttribute("y", "100"); t.setAttribute("text-anchor", "middle");
    t.setAttribute("class", "muted");
    t.textContent = empty || "no data yet";
    svg.append(t);
    return;
  }
  const [L, R, T, B] = [56, 590, 10, 180];
  const xs = all.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const y1 = Math.max(1, ...all.map((p) => p[1]));
  const sx = (x) => (x1 === x0 ? (L + R) / 2 : L + ((x - x0) / (x1 - x0)) * (R - L));
  const sy = (y) => B - (y / y1) * (B - T);
  const line = (x, y, x2, y2, cls) => {
    const l = document.createElementNS(SVG_NS, "line");
    l.setAttribute("x1", x); l.setAttribute("y1", y); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
    l.setAttribute("class", cls);
    svg.append(l);
  };
  const label = (x, y, text, anchor, cls) => {
    const t = document.createElementNS(SVG_NS, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor);
    t.setAttribute("class", cls || "tick");
    t.textContent = text;
    svg.append(t);
  };
  line(L, B, R, B, "axis"); line(L, T, L, B, "axis"); line(L, T, R, T, "grid");
  label(L - 4, T + 4, human(y1) + unit, "end"); label(L - 4, B, "0", "end");
  if (x1 === x0) {
    bars(svg, series, [L, R, T, B], y1, unit, label);
    label((L + R) / 2, B + 16, "window of " + time(x0), "middle");
    return;
  }
  label(L, B + 16, time(x0).slice(11), "start"); label(R, B + 16, time(x1).slice(11), "end");
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ");
    const pl = document.createElementNS(SVG_NS, s.points.length > 1 ? "polyline" : "circle");
    if (s.points.length > 1) {
      pl.setAttribute("points", pts); pl.setAttribute("fill", "none"); pl.setAttribute("stroke", color);
      pl.setAttribute("stroke-width", "2");
    } else {
      pl.setAttribute("cx", sx(s.points[0][0])); pl.setAttribute("cy", sy(s.points[0][1]));
      pl.setAttribute("r", "3"); pl.setAttribute("fill", color);
    }
    svg.append(pl);
    const key = el("span", s.name, "key");
    key.dataset.color = String(i % COLORS.length);
    legend.append(key);
  });
}

// One window only (a short capture): a bar per series, its value above it.
function bars(svg, series, [L, R, T, B], y1, unit, label) {
  const slot = (R - L) / series.length;
  const w = Math.min(60, slot * 0.6);
  series.forEach((s, i) => {
    const y = s.points[0][1];
    const h = (y / y1) * (B - T);
    const x = L + slot * i + (slot - w) / 2;
    const r = document.createElementNS(SVG_NS, "rect");
    r.setAttribute("x", x.toFixed(1)); r.setAttribute("y", (B - h).toFixed(1));
    r.setAttribute("width", w.toFixed(1)); r.setAttribute("height", h.toFixed(1));
    r.setAttribute("fill", COLORS[i % COLORS.length]);
    svg.append(r);
    const inside = B - h - 4 < T + 12;
    label(x + w / 2, inside ? T + 14 : B - h - 4, human(y) + unit, "middle", inside ? "tick inside" : "tick");
    const legend = document.getElementById(svg.id.replace("chart", "legend"));
    const key = el("span", s.name, "key");
    key.dataset.color = String(i % COLORS.length);
    legend.append(key);
  });
}

// Series by key of `windows` ([{window_start, [field]: {key: {...}}}]), value `pick`.
function seriesOf(windows, field, pick) {
  const by = new Map();
  for (const w of windows) {
    for (const [k, v] of Object.entries(w[field] || {})) {
      if (!by.has(k)) by.set(k, []);
      by.get(k).push([w.window_start, pick(v)]);
    }
  }
  return [...by.entries()].map(([name, points]) => ({ name, points }));
}

function renderSummary(s) {
  $("session-count").textContent = String(s.sessions_received);
  $("episode-count").textContent = String(s.episodes_started);
  $("open-count").textContent = String(s.episodes_open);
  $("processor-count").textContent = String(s.processors);
  $("status").textContent = s.ended ? "run ended (final state)" : "live";
  $("status").className = "status " + (s.ended ? "ended" : "live");
  $("updated").textContent = "updated " + time(s.now);
}

function renderTraffic(t) {
  chart("chart-packets", "legend-packets", seriesOf(t.windows, "proto", (v) => v.packets), "");
  chart("chart-bytes", "legend-bytes", seriesOf(t.windows, "proto", (v) => v.bytes), "B");
  chart("chart-services", "legend-services", seriesOf(t.services, "service", (v) => v.sessions), "",
    "no session with a service yet");
}

// The sessions behind an episode: its address (the side that is not "*") during it.
function episodeLink(a, tr) {
  const td = el("td");
  const who = a.src !== "*" ? a.src : a.dst;
  if (who && who !== "*" && /^[0-9a-fA-F.:]+$/.test(who)) {
    const link = el("a", "sessions");
    const p = new URLSearchParams({ q: who, from: String(a.episode_start), to: String(a.window_end + 1) });
    link.href = "#" + p.toString();
    td.append(link);
  }
  tr.append(td);
}

const EPISODE_COLUMNS = ["kind", "src", "dst", "event", "episode_start", "window_end", "windows", "count", "peak"];
const TIME_FORMAT = { episode_start: time, window_start: time, window_end: time, ts: time };

function renderAlerts(a) {
  const opts = { preferred: EPISODE_COLUMNS, format: TIME_FORMAT, extra: episodeLink, extraHead: "" };
  table("alerts-open", a.open, { ...opts, empty: "no open episode" });
  table("alerts-recent", a.recent, { ...opts, empty: "no ended episode" });
}

function renderTops(t) {
  $("top-windows").textContent = String(t.windows);
  const format = { bytes: human };
  table("top-talkers", t.talkers, { preferred: ["id.orig_h", "bytes", "pkts", "sessions"], format, empty: "no sessions in these windows" });
  table("top-servers", t.servers, { preferred: ["id.resp_h", "id.resp_p", "proto", "bytes", "pkts", "sessions"], format, empty: "no sessions in these windows" });
}

const SESSION_COLUMNS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "server_name", "conn_state", "duration", "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes", "history"];

function renderSessions(s) {
  table("sessions-table", s.sessions, { preferred: SESSION_COLUMNS, format: { ts: time }, empty: "no session matches" });
  $("search-info").textContent = s.matched + " matching of " + s.sessions_held + " held (at most " + s.sessions_cap + ")" + (s.matched > s.returned ? ", newest " + s.returned + " shown" : "");
  document.body.dataset.searched = s.q;
  document.body.dataset.matched = String(s.matched);
}

function renderHealth(h) {
  const procs = h.processors.map((p) => ({
    processor: p.processor, incarnation: p.incarnation, member: p.member, flows_open: p.flows_open,
    watermark_lag_s: p.watermark_lag_s, age_s: p.age_s, silent_collectors: p.silent_collectors.join(" "),
  }));
  table("health-processors", procs, { empty: "no heartbeat yet" });
  const colls = h.processors.flatMap((p) => p.collectors.map((c) => ({ processor: p.processor, ...c })));
  table("health-collectors", colls, { empty: "no collector reported yet" });
  const counters = Object.entries(h.counters).map(([name, value]) => ({ name, value }));
  counters.push({ name: "dashboard_records_skipped", value: h.dashboard.records_skipped });
  table("health-counters", counters, { empty: "no counters yet" });
  const box = $("identities");
  box.replaceChildren();
  if (h.report) {
    const r = h.report;
    const p = el("p");
    for (const k of ["reconciled", "complete", "routing_consistent"]) {
      p.append(el("span", k + ": " + r[k], "pill " + (r[k] ? "ok" : "bad")));
    }
    box.append(p);
    if (r.collectors && r.collectors.length) {
      const d = el("div", null, "table");
      d.id = "report-collectors";
      box.append(el("h3", "Accounting report: collectors"), d);
      table("report-collectors", r.collectors.map(flat), { preferred: REPORT_COLUMNS });
    }
  } else {
    box.append(el("p", "accounting identities: reported when the processors end (live figures below)", "muted"));
  }
}

// The accounting report's collector rows: who, the identities, drops by reason, skew first.
const REPORT_COLUMNS = ["sender", "incarnation", "status", "dead", "packets_read", "packets_summarised", "packets_reconcile", "summaries", "summaries_reconcile", "drops", "kernel_dropped", "if_dropped", "skew_max_ms"];

// Nested objects as JSON text, one level.
function flat(o) {
  const out = {};
  for (const [k, v] of Object.entries(o)) out[k] = v !== null && typeof v === "object" ? JSON.stringify(v) : v;
  return out;
}

function currentSearch() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { q: p.get("q") || "", from: p.get("from") || "", to: p.get("to") || "" };
}

async function search() {
  const s = currentSearch();
  $("q").value = s.q;
  const p = new URLSearchParams({ q: s.q, limit: "50" });
  if (s.from) p.set("from", s.from);
  if (s.to) p.set("to", s.to);
  try {
    renderSessions(await get("/api/sessions?" + p.toString()));
  } catch (e) {
    $("search-info").textContent = String(e.message);
  }
}

async function refresh() {
  try {
    const [summary, traffic, alerts, tops, health] = await Promise.all(
      ["/api/summary", "/api/traffic", "/api/alerts", "/api/top", "/api/health"].map(get));
    renderSummary(summary);
    renderTraffic(traffic);
    renderAlerts(alerts);
    renderTops(tops);
    renderHealth(health);
    await search();
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").textContent = "unreachable: " + e.message;
    $("status").className = "status bad";
  }
}

function start() {
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    location.hash = q ? new URLSearchParams({ q }).toString() : "";
  });
  window.addEventListener("hashchange", search);
  document.body.dataset.errors = String(errors.length);
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
