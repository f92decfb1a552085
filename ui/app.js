// Kiln's web UI: plain modules, no build step. This one holds the state
// and the views and wires the page; the flame graph, the glue it can
// hide, the timeline and the exports have rooms of their own. State lives
// in the URL, so a link is shareable and reloadable; every view reads the
// server's /api/v1/ endpoints (docs/api.md).

import { $, api, esc, fmtValue, pct, dark } from "./util.js";
import { Flame, sandwich, treeFrom } from "./flame.js";
import { hideGlue, stripGlue, withGlue, withoutGlue } from "./glue.js";
import { drawTimeline, drawMarkers, wireTimelineDrag } from "./timeline.js";
import { download, folded, svg } from "./export.js";
import { drawLanes, legend, describe } from "./lanes.js";
import { tasksHtml, splitLegend, drawLatency, dur } from "./tasks.js";

// ---------------------------------------------------------------- state

// The flame graph opens as an icicle, root at the top, where a deep
// stack cannot push it below the first screen (`icicle=0`: the classic
// flame, root at the bottom); `glue=hide` drops thread-start glue.
const DEFAULTS = { query: "", from: "now-1h", until: "now", tab: "flame", search: "",
  focus: "", icicle: "1", glue: "", sandwich: "", groupBy: "", rquery: "", rfrom: "", runtil: "", task: "", grew: "" };
const state = { ...DEFAULTS };

function readUrl() {
  const p = new URLSearchParams(location.search);
  for (const k of Object.keys(DEFAULTS)) state[k] = p.get(k) ?? DEFAULTS[k];
}

function writeUrl(push) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v && v !== DEFAULTS[k]) p.set(k, v);
  const url = location.pathname + (p.toString() ? "?" + p : "");
  if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
}

const typeOf = (q) => { const i = q.indexOf("{"); return i < 0 ? q : q.slice(0, i); };
const selectorOf = (q) => { const i = q.indexOf("{"); return i < 0 ? "{}" : q.slice(i); };
// A gauge says what is held (the live heap), not what happened: the
// server gives its mean over a range, and the views speak of bytes held.
const isGauge = (q) => /^[^:{]*:inuse_/.test(q);

function status(msg, error) {
  const s = $("#status");
  s.textContent = msg || "";
  s.classList.toggle("error", !!error);
}

// ---------------------------------------------------------------- views

let flame, diffFlame, topRows = [], topMeta = {}, sort = { key: "self", dir: -1 }, lastTree = null;
let diffData = null;
// `lastTree` without its glue, made once per tree.
let glueless = null;

const hidingGlue = () => state.glue === "hide";
function shownTree() {
  if (!hidingGlue()) return lastTree;
  if (!glueless || glueless.from !== lastTree) glueless = { from: lastTree, tree: hideGlue(lastTree) };
  return glueless.tree;
}

function parseTime(s, now) {
  s = (s || "").trim();
  if (!s || s === "now") return now;
  const m = s.match(/^now-(\d+)(ms|s|m|h|d|w)$/);
  if (m) return now - Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[2]];
  if (/^\d+$/.test(s)) { const n = Number(s); return n < 1e11 ? n * 1000 : n; }
  const d = Date.parse(s);
  return isNaN(d) ? now : d;
}
// Absolute dates typed in the form go to the server as milliseconds.
const toServerTime = (s) => (/^(now|now-\d+(ms|s|m|h|d|w)|\d+)$/.test((s || "").trim()) ? s.trim() : String(parseTime(s, Date.now())));

function range() { return { from: toServerTime(state.from), until: toServerTime(state.until) }; }

async function loadFlame() {
  const r = range();
  const params = { query: state.query, ...r, maxNodes: "100000", samples: "true" };
  performance.mark("kiln-fetch");
  const [tree, top] = await Promise.all([
    api("/api/v1/flamegraph", params),
    // The 5,000 heaviest functions: the table shows 2,000 at a time, and
    // the rest would weigh megabytes for rows of a few samples.
    api("/api/v1/top", { query: state.query, ...r, n: "5000" }),
  ]);
  performance.mark("kiln-data");
  lastTree = treeFrom(tree);
  topRows = top.rows; topMeta = top;
  $("#export-pprof").href = "/api/v1/pprof?" + new URLSearchParams({ query: state.query, ...r });
  showFlame();
  performance.mark("kiln-drawn");
  // The graph first; the table on the next frame.
  await new Promise((done) => requestAnimationFrame(() => { renderTop(); done(); }));
}

function showFlame() {
  if (!lastTree) return;
  const head = $("#sandwich-head");
  const tree = shownTree();
  $("#flame").dataset.glue = hidingGlue() ? "hidden" : "shown";
  if (state.sandwich) {
    const { callers, callees } = sandwich(tree, state.sandwich);
    // Callers drawn as an icicle above the function, callees below.
    const merged = { name: "total", self: 0, total: callers.total, children: [] };
    const up = { ...callers, name: "▲ callers of " + state.sandwich };
    const down = { ...callees, name: "▼ " + state.sandwich + " calls" };
    merged.children = [up, down].filter((n) => n.total > 0);
    merged.total = merged.children.reduce((a, n) => a + n.total, 0);
    flame.set(merged, topMeta.unit);
    head.hidden = false;
    head.querySelector("span").textContent = `Sandwich of ${state.sandwich}: callers above, callees below`;
    $("#flame").dataset.sandwich = state.sandwich;
  } else {
    flame.set(tree, topMeta.unit);
    flame.focusPath(state.focus);
    head.hidden = true;
    delete $("#flame").dataset.sandwich;
  }
  flame.search = state.search;
  flame.draw();
}

function renderTop() {
  const f = $("#filter").value.toLowerCase();
  const total = topMeta.total || 0;
  const rows = topRows
    .map((r) => ({ ...r, pct: total ? r.self / total : 0 }))
    .filter((r) => !f || r.name.toLowerCase().includes(f));
  const { key, dir } = sort;
  rows.sort((a, b) => (key === "name" ? a.name.localeCompare(b.name) : a[key] - b[key]) * dir);
  // The Pareto cut: the last row inside the 80% set, in self order.
  const lastPareto = sort.key === "self" && sort.dir === -1 ? rows.filter((r) => r.pareto).length - 1 : -1;
  const max = rows.reduce((a, r) => Math.max(a, r.self), 1);
  const tb = $("#top tbody");
  tb.innerHTML = rows.slice(0, 2000).map((r, i) =>
    `<tr data-name="${esc(r.name)}" data-self="${r.self}" data-total="${r.total}" data-pareto="${r.pareto}"${i === lastPareto ? ' class="pareto-cut"' : ""}>` +
    `<td>${esc(r.name)}</td><td class="num">${fmtValue(r.self, topMeta.unit)}</td>` +
    `<td class="num">${fmtValue(r.total, topMeta.unit)}</td>` +
    `<td class="num">${(r.pct * 100).toFixed(2)}%<span class="bar" style="width:${(40 * r.self / max).toFixed(0)}px"></span></td></tr>`).join("");
  $("#top").dataset.rows = rows.length;
}

async function loadTimeline() {
  const r = range();
  const now = Date.now();
  const data = await api("/api/v1/timeline", { query: state.query, ...r, ...(state.groupBy ? { groupBy: state.groupBy } : {}) });
  drawTimeline(data, parseTime(state.from, now), parseTime(state.until, now));
  heapNote(data);
  // The selection's watchdog events as marks (none: no mark).
  const ev = await api("/api/v1/events", { query: selectorOf(state.query), ...r }).catch(() => ({ events: [] }));
  drawMarkers(ev.events || []);
  await loadFunctionTimeline();
}

// With a function in the search box: its share of the selection over
// time (anywhere in the stack), under the timeline.
async function loadFunctionTimeline() {
  $("#fn-pane").hidden = !state.search;
  if (!state.search) return;
  const now = Date.now();
  const re = ".*" + state.search.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + ".*";
  const data = await api("/api/v1/timeline", { query: state.query, ...range(), function: re, measure: "total" });
  const pts = data.lines[0].points;
  const peak = pts.reduce((m, [, v]) => Math.max(m, v), 0);
  $("#fn-label").textContent = `share of ${state.search} (in the stack), peak ${peak.toFixed(1)}%`;
  drawShare($("#fn-timeline"), pts, parseTime(state.from, now), parseTime(state.until, now));
}

function drawShare(c, pts, from, until) {
  const w = c.getBoundingClientRect().width || 600, h = 60, dpr = window.devicePixelRatio || 1;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const x = (t) => ((t - from) / Math.max(1, until - from)) * w;
  const y = (v) => h - 4 - (v / 100) * (h - 8);
  g.strokeStyle = "#d33aff"; g.lineWidth = 1.5; g.beginPath();
  pts.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
  g.stroke();
  c.dataset.points = pts.length;
  c.dataset.peak = pts.reduce((m, [, v]) => Math.max(m, v), 0);
}

async function loadThreads() {
  const t = await api("/api/v1/threads", { query: state.query, ...range() });
  // Cores: CPU time over the time the thread was seen (its own profiles'
  // span), so a thread that started late is not spread over the range.
  // Marks: near a full core (a bottleneck); switching more than once per
  // millisecond it computes (work offloaded in pieces too short).
  const marks = (r) => {
    const cls = [], why = [];
    if ((r.cores ?? 0) >= 0.8) { cls.push("hot"); why.push("near a full core: a bottleneck"); }
    if (r.switchy) { cls.push("switchy"); why.push("switches more than once per millisecond of CPU"); }
    return cls.length ? ` class="${cls.join(" ")}" title="${why.join("; ")}"` : "";
  };
  const c = (r) => r.counters || {};
  const row = (r) => `<tr data-name="${esc(r.name)}" data-cores="${r.cores ?? ""}" data-seen="${r.seen_ns ?? ""}" data-switches="${(c(r).voluntary_switches ?? 0) + (c(r).involuntary_switches ?? 0)}"${marks(r)}>` +
    `<td>${esc(r.name || "(unnamed)")}</td><td class="num">${(100 * r.share).toFixed(1)}%</td>` +
    `<td class="num">${r.cores !== undefined ? r.cores.toFixed(2) : "—"}</td>` +
    `<td class="num">${r.seen_ns !== undefined ? fmtValue(r.seen_ns, "nanoseconds") : "—"}</td>` +
    `<td class="num">${r.counters ? fmtValue(c(r).run_delay_ns, "nanoseconds") : "—"}</td>` +
    `<td class="num">${r.counters ? `${fmtValue(c(r).voluntary_switches, "count")} / ${fmtValue(c(r).involuntary_switches, "count")}` : "—"}</td></tr>`;
  $("#pools tbody").innerHTML = t.pools.map(row).join("");
  $("#threads tbody").innerHTML = t.threads.map(row).join("");
  $("#threads").dataset.rows = t.threads.length;
  await loadLanes();
}

// The thread timeline of the selection's instances.
let laneHit = null;
async function loadLanes() {
  const data = await api("/api/v1/lanes", { query: selectorOf(state.query), ...range() });
  $("#lanes-legend").innerHTML = legend();
  $("#lanes-source").textContent = data.source ? `from the ${data.source} profile, ${data.step_ms / 60000}-minute steps` : "no wall or threads profile in this range";
  laneHit = drawLanes($("#lanes"), data);
  laneHit.source = data.source;
}

// Opens the flame graph of one thread over one step of the timeline: the
// wall profile when the lanes came from it (what it did, on or off a
// CPU), else CPU.
function openLane(hit, source) {
  const type = source === "wall" ? "wall:wall:nanoseconds:wall:nanoseconds" : "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
  const sel = selectorOf(state.query).replace(/}$/, "");
  const name = hit.thread.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  state.query = type + sel + (sel.length > 1 ? ", " : "") + `thread_name="${name}"}`;
  state.from = String(hit.t); state.until = String(hit.until);
  state.tab = "flame"; state.focus = ""; state.sandwich = ""; state.search = "";
  writeUrl(true); syncForm(); load();
}

// Locks by time waited, from the mutex:delay profile of the selection.
async function loadLocks() {
  const q = "mutex:delay:nanoseconds:contentions:count" + selectorOf(state.query);
  const g = await api("/api/v1/group", { query: q, ...range(), by: "lock" });
  const rows = (g.rows || []).filter((r) => r.name);
  $("#locks tbody").innerHTML = rows.length ? rows.map((r) => `<tr data-name="${esc(r.name)}" data-value="${r.value}">` +
    `<td>${esc(r.name)}</td><td class="num">${fmtValue(r.value, "nanoseconds")}</td><td class="num">${(100 * r.share).toFixed(1)}%</td></tr>`).join("")
    : `<tr><td colspan="3">No waits on kiln_agent::sync locks in this range.</td></tr>`;
  $("#locks").dataset.rows = rows.length;
}

function openLock(name) {
  const sel = selectorOf(state.query).replace(/}$/, "");
  const v = name.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  state.query = "mutex:delay:nanoseconds:contentions:count" + sel + (sel.length > 1 ? ", " : "") + `lock="${v}"}`;
  state.tab = "flame"; state.focus = ""; state.sandwich = ""; state.search = "";
  writeUrl(true); syncForm(); load();
}

// Tasks of the selection (any profile type: tasks are their own), against
// the comparison range when one is set; the chosen task's latency.
async function loadTasks() {
  const sel = selectorOf(state.query);
  const [data, other] = await Promise.all([
    api("/api/v1/tasks", { query: sel, ...range() }),
    state.rfrom ? api("/api/v1/tasks", { query: state.rquery || sel, from: toServerTime(state.rfrom), until: toServerTime(state.runtil || "now") }) : null,
  ]);
  $("#tasks tbody").innerHTML = tasksHtml(data, other);
  $("#tasks").dataset.rows = data.tasks.length;
  $("#tasks-legend").innerHTML = data.tasks.length ? splitLegend(data) : "";
  $("#tasks-compare").textContent = other ? `changes against ${state.rfrom} – ${state.runtil || "now"}` : "";
  await loadTaskLatency();
}

async function loadTaskLatency() {
  $("#task-detail").hidden = !state.task;
  if (!state.task) return;
  $("#task-name").textContent = state.task;
  const data = await api("/api/v1/tasks", { query: selectorOf(state.query), ...range(), task: state.task });
  drawLatency($("#task-latency"), data);
}

// Stuck tasks the watchdogs caught, newest first; a click shows the stack.
let eventRows = [];
async function loadEvents() {
  const data = await api("/api/v1/events", { query: selectorOf(state.query), ...range() });
  eventRows = data.events || [];
  $("#events tbody").innerHTML = eventRows.length ? eventRows.map((e, i) => `<tr data-i="${i}" data-task="${esc(e.task || "")}">` +
    `<td>${new Date(e.time_ms).toLocaleString()}</td><td>${esc(e.instance || "")}</td><td>${esc(e.task || "")}</td>` +
    `<td>${esc(e.thread_name || "")}</td><td class="num">${dur(e.elapsed_ns)}${e.capture > 1 ? " (again)" : ""}</td>` +
    `<td class="num">${dur(e.deadline_ns)}</td><td>${esc(e.site || "")}</td></tr>`).join("")
    : `<tr><td colspan="7">No stuck tasks in this range.</td></tr>`;
  $("#events").dataset.rows = eventRows.length;
  $("#event-detail").hidden = true;
}

function showEvent(i) {
  const e = eventRows[i];
  if (!e) return;
  $("#event-title").textContent = `${e.task} on ${e.thread_name} (${e.instance}), running for ${dur(e.elapsed_ns)}`;
  $("#event-stack").textContent = (e.stack || []).join("\n");
  $("#event-detail").hidden = false;
  $("#event-flame").onclick = () => {
    const q = (v) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
    state.query = `process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="${q(e.service_name)}", instance="${q(e.instance)}"}`;
    state.from = String(e.time_ms - 60000); state.until = String(e.time_ms + 60000);
    state.tab = "flame"; state.focus = ""; state.sandwich = ""; state.search = "";
    writeUrl(true); syncForm(); load();
  };
}

// Every rule's state; a click opens what it watches.
async function loadAlerts() {
  const data = await api("/api/v1/alerts", {});
  const rows = data.alerts || [];
  const fmt = (r) => r.value === null ? "—" : r.kind === "share" ? r.value.toFixed(2) + "%" : r.kind === "task" ? dur(r.value) : String(r.value);
  $("#alerts tbody").innerHTML = rows.length ? rows.map((r) => `<tr data-name="${esc(r.name)}" data-state="${r.state}" data-kind="${r.kind}" data-query="${esc(r.query)}" class="alert-${r.state}">` +
    `<td>${esc(r.name)}</td><td>${r.kind}</td><td class="state">${r.state}${r.error ? ` <span class="hint" title="${esc(r.error)}">(error)</span>` : ""}</td>` +
    `<td class="num">${fmt(r)}</td><td>${r.since_ms ? new Date(r.since_ms).toLocaleString() : ""}</td><td><code>${esc(r.query)}</code></td></tr>`).join("")
    : `<tr><td colspan="6">No alert rules: add [[alerts]] to kiln.toml (docs/api.md).</td></tr>`;
  $("#alerts").dataset.rows = rows.length;
}

function openAlert(tr) {
  const kind = tr.dataset.kind;
  state.query = kind === "share" ? tr.dataset.query : "process_cpu:cpu:nanoseconds:cpu:nanoseconds" + selectorOf(tr.dataset.query);
  state.tab = kind === "share" ? "flame" : kind === "task" ? "tasks" : "events";
  state.focus = ""; state.sandwich = ""; state.search = "";
  writeUrl(true); syncForm(); load();
}

// The CPU flame graph of the samples taken inside one task.
function openTask(name) {
  const sel = selectorOf(state.query).replace(/}$/, "");
  const v = name.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  state.query = "process_cpu:cpu:nanoseconds:cpu:nanoseconds" + sel + (sel.length > 1 ? ", " : "") + `task="${v}"}`;
  state.tab = "flame"; state.focus = ""; state.sandwich = ""; state.search = "";
  writeUrl(true); syncForm(); load();
}

// Under a gauge's timeline: the heap over time in words, its peak and
// its last minute.
function heapNote(data) {
  const n = $("#timeline-note");
  const pts = (data.lines || []).length === 1 ? data.lines[0].points : [];
  if (!isGauge(state.query) || !pts.length) { n.textContent = ""; return; }
  const unit = state.query.includes(":inuse_space") ? "bytes" : "count";
  const peak = pts.reduce((m, [, v]) => Math.max(m, v), 0);
  const m = (data.step_ms || 60000) / 60000;
  const step = m >= 60 ? `${m / 60} h` : m > 1 ? `${m} minutes` : "minute";
  n.textContent = `held per ${step} (mean): peak ${fmtValue(peak, unit)}, last ${fmtValue(pts[pts.length - 1][1], unit)}`;
}

// The two sides of a comparison. "What grew" (`grew=1`) compares the
// first sixth of the range (at least a minute) with its last sixth.
function compareSides() {
  const base = range();
  if (state.grew) {
    const now = Date.now();
    const from = parseTime(state.from, now), until = parseTime(state.until, now);
    const w = Math.max(60000, Math.floor((until - from) / 6));
    return {
      leftQuery: state.query, leftFrom: String(from), leftUntil: String(Math.min(until, from + w)),
      rightQuery: state.query, rightFrom: String(Math.max(from, until - w)), rightUntil: String(until),
    };
  }
  const rq = state.rquery ? typeOf(state.query) + state.rquery : state.query;
  return {
    leftQuery: state.query, leftFrom: base.from, leftUntil: base.until,
    rightQuery: rq, rightFrom: toServerTime(state.rfrom || state.from), rightUntil: toServerTime(state.runtil || state.until),
  };
}

async function loadCompare() {
  const sides = compareSides();
  $("#grew").hidden = !isGauge(state.query);
  $("#compare-note").textContent = state.grew
    ? `What grew: ${new Date(+sides.leftFrom).toLocaleTimeString()} – ${new Date(+sides.leftUntil).toLocaleTimeString()} against ${new Date(+sides.rightFrom).toLocaleTimeString()} – ${new Date(+sides.rightUntil).toLocaleTimeString()}, bytes held on each side (mean over it).`
    : isGauge(state.query) ? "Red grew, green shrank, by what each side held." : "Red grew, green shrank, by share of each side's total.";
  diffData = await api("/api/v1/diff", sides);
  showDiff();
}

function showDiff() {
  if (!diffData) return;
  // The diff tree from per-stack values, glue dropped if asked.
  const root = { name: "total", self: 0, total: 0, base: 0, new: 0, children: [] };
  for (const s of diffData.stacks) {
    let at = root;
    at.base += s.base; at.new += s.new;
    const frames = s.stack.split(";");
    for (const name of hidingGlue() ? stripGlue(frames) : frames) {
      let k = at.children.find((c) => c.name === name);
      if (!k) { k = { name, self: 0, total: 0, base: 0, new: 0, children: [] }; at.children.push(k); }
      k.base += s.base; k.new += s.new;
      at = k;
    }
  }
  // Width by the larger normalised share, so shrunk frames still show;
  // a gauge's sides by what they held, so growth is growth in bytes.
  const [bt, nt] = normalisers();
  const size = (n) => { n.total = Math.round(1e9 * Math.max(n.base / bt, n.new / nt)); n.children.forEach(size); n.children.sort((a, b) => b.total - a.total); };
  size(root);
  diffFlame.set(root, diffData.unit);
  diffFlame.draw();
  $("#diff").dataset.stacks = diffData.stacks.length;
  if (isGauge(state.query)) { showGrowth(); return; }
  $("#movers thead").innerHTML = '<tr><th>Function</th><th class="num">Base %</th><th class="num">New %</th><th class="num">Δ pts</th></tr>';
  $("#movers tbody").innerHTML = diffData.functions.slice(0, 200).map((r) => {
    const cls = r.self_delta_pct > 0 ? "grew" : r.self_delta_pct < 0 ? "shrank" : "";
    return `<tr data-name="${esc(r.name)}" data-delta="${r.self_delta_pct}" class="${cls}"><td>${esc(r.name)}</td>` +
      `<td class="num">${pct(r.base_self, bt)}</td><td class="num">${pct(r.new_self, nt)}</td>` +
      `<td class="num ${cls}">${r.self_delta_pct > 0 ? "+" : ""}${r.self_delta_pct.toFixed(2)}</td></tr>`;
  }).join("");
  $("#movers").dataset.rows = diffData.functions.length;
}

// A gauge's movers: bytes held on each side and what grew, the largest
// growth first.
function showGrowth() {
  const unit = diffData.unit;
  $("#movers thead").innerHTML = '<tr><th>Function</th><th class="num">Base held</th><th class="num">New held</th><th class="num">Grew by</th></tr>';
  const rows = diffData.functions
    .filter((r) => r.base_self || r.new_self)
    .sort((a, b) => (b.new_self - b.base_self) - (a.new_self - a.base_self));
  $("#movers tbody").innerHTML = rows.slice(0, 200).map((r) => {
    const d = r.new_self - r.base_self;
    const cls = d > 0 ? "grew" : d < 0 ? "shrank" : "";
    return `<tr data-name="${esc(r.name)}" data-delta="${d}" class="${cls}"><td>${esc(r.name)}</td>` +
      `<td class="num">${fmtValue(r.base_self, unit)}</td><td class="num">${fmtValue(r.new_self, unit)}</td>` +
      `<td class="num ${cls}">${d > 0 ? "+" : d < 0 ? "−" : ""}${fmtValue(Math.abs(d), unit)}</td></tr>`;
  }).join("");
  $("#movers").dataset.rows = rows.length;
}

// What a side's values are divided by: its total (shares), or for a
// gauge the larger total of the two (bytes, on one scale).
function normalisers() {
  const bt = diffData.base_total || 1, nt = diffData.new_total || 1;
  if (!isGauge(state.query)) return [bt, nt];
  const m = Math.max(bt, nt);
  return [m, m];
}

function diffColor(n) {
  const [bt, nt] = normalisers();
  const d = n.new / nt - n.base / bt;
  const m = Math.min(1, Math.abs(d) * 20);
  if (Math.abs(d) < 1e-4) return dark() ? "hsl(220 6% 40%)" : "hsl(220 8% 80%)";
  const light = dark() ? 30 + 22 * (1 - m) : 55 + 30 * (1 - m);
  return d > 0 ? `hsl(0 70% ${light}%)` : `hsl(140 55% ${light}%)`;
}

// ---------------------------------------------------------------- wiring

// What a profile type measures, in words: the menu offers types by name
// (memory allocated against memory in use), the ID beside it.
const TYPE_NAMES = [
  [/^process_cpu:cpu:/, "CPU time"], [/^process_cpu:samples:/, "CPU samples"],
  [/^wall:wall:/, "Wall clock"], [/^wall:samples:/, "Wall-clock samples"],
  [/^memory:alloc_space:/, "Memory allocated (bytes)"], [/^memory:alloc_objects:/, "Memory allocated (objects)"],
  [/^memory:inuse_space:/, "Memory in use (bytes held)"], [/^memory:inuse_objects:/, "Memory in use (objects held)"],
  [/^mutex:delay:/, "Lock wait time"], [/^mutex:contentions:/, "Lock contentions"],
  [/^block:delay:/, "Blocking time"], [/^block:contentions:/, "Blocking events"],
  [/^goroutine[s]?:/, "Goroutines"],
];
function typeTitle(t) {
  const hit = TYPE_NAMES.find(([re]) => re.test(t));
  return hit ? `${hit[1]} — ${t}` : t;
}

async function loadTypes() {
  const types = await api("/api/v1/profile-types", {});
  const sel = $("#type");
  sel.innerHTML = types.map((t) => `<option value="${esc(t)}">${esc(typeTitle(t))}</option>`).join("");
  if (!state.query && types.length) {
    const cpu = types.find((t) => t.startsWith("process_cpu:cpu:")) || types[0];
    state.query = cpu + "{}";
    writeUrl(false);
  }
}

async function loadCompletions() {
  const names = await api("/api/v1/labels", {});
  const opts = [];
  const g = $("#group-by");
  g.innerHTML = `<option value="">—</option>` + names.filter((n) => n !== "__name__").map((n) => `<option${n === state.groupBy ? " selected" : ""}>${esc(n)}</option>`).join("");
  for (const n of names.filter((n) => n !== "__name__").slice(0, 20)) {
    const values = await api("/api/v1/label-values", { name: n });
    for (const v of values.slice(0, 50)) opts.push(`{${n}="${v}"}`);
  }
  $("#completions").innerHTML = opts.map((o) => `<option value="${esc(o)}">`).join("");
}

function syncForm() {
  const t = typeOf(state.query);
  if (t && ![...$("#type").options].some((o) => o.value === t)) $("#type").insertAdjacentHTML("beforeend", `<option value="${esc(t)}">${esc(typeTitle(t))}</option>`);
  $("#type").value = t;
  $("#selector").value = selectorOf(state.query);
  const preset = [...$("#preset").options].find((o) => o.value === state.from && state.until === "now");
  $("#preset").value = preset ? preset.value : "custom";
  $("#from").value = state.from; $("#until").value = state.until;
  $("#search").value = state.search;
  $("#icicle").checked = state.icicle !== "0";
  $("#glue").checked = hidingGlue();
  $("#r-selector").value = state.rquery; $("#r-from").value = state.rfrom; $("#r-until").value = state.runtil;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === state.tab);
  $("#flame-tab").hidden = state.tab !== "flame";
  $("#compare-tab").hidden = state.tab !== "compare";
  $("#grew").hidden = !isGauge(state.query);
  $("#threads-tab").hidden = state.tab !== "threads";
  $("#locks-tab").hidden = state.tab !== "locks";
  $("#tasks-tab").hidden = state.tab !== "tasks";
  $("#events-tab").hidden = state.tab !== "events";
  $("#alerts-tab").hidden = state.tab !== "alerts";
}

let loading = 0;
async function load() {
  if (!state.query) { status("no profiles yet: push some (see README)"); return; }
  const mine = ++loading;
  status("loading…");
  document.body.dataset.ready = "0";
  try {
    const work = [loadTimeline()];
    if (state.tab === "flame") work.push(loadFlame());
    if (state.tab === "threads") work.push(loadThreads());
    if (state.tab === "locks") work.push(loadLocks());
    if (state.tab === "tasks") work.push(loadTasks());
    if (state.tab === "events") work.push(loadEvents());
    if (state.tab === "alerts") work.push(loadAlerts());
    if (state.tab === "compare") work.push(loadCompare());
    await Promise.all(work);
    if (mine === loading) status("");
  } catch (e) {
    if (mine === loading) status(e.message, true);
  } finally {
    if (mine === loading) document.body.dataset.ready = "1";
  }
}

function updateMatches(f) {
  const m = $("#matches");
  if (!f.search) { m.textContent = ""; delete f.canvas.dataset.matches; return; }
  const share = f.root ? f.matchTotal / Math.max(f.root.total, 1) : 0;
  m.textContent = `${f.matchCount} match${f.matchCount === 1 ? "" : "es"} · ${(100 * share).toFixed(2)}% of total`;
  f.canvas.dataset.matches = f.matchCount;
  f.canvas.dataset.matchShare = share.toFixed(4);
}

function init() {
  readUrl();
  flame = new Flame($("#flame"), {
    icicle: () => state.icicle !== "0",
    onZoom: (f) => { if (!state.sandwich) { state.focus = f.path(); writeUrl(true); } renderCrumbs(); },
    onDraw: (f) => { updateMatches(f); renderCrumbs(); },
  });
  diffFlame = new Flame($("#diff"), {
    icicle: () => state.icicle !== "0",
    color: diffColor,
    baseTotal: () => diffData.base_total, newTotal: () => diffData.new_total,
  });
  wireTimelineDrag((from, until) => {
    state.from = String(from); state.until = String(until);
    writeUrl(true); syncForm(); load();
  });

  $("#bar").addEventListener("submit", (e) => {
    e.preventDefault();
    state.query = $("#type").value + ($("#selector").value.trim() || "{}");
    if ($("#preset").value !== "custom") { state.from = $("#preset").value; state.until = "now"; }
    else { state.from = $("#from").value || "now-1h"; state.until = $("#until").value || "now"; }
    state.focus = ""; state.sandwich = "";
    writeUrl(true); syncForm(); load();
  });
  $("#preset").addEventListener("change", () => { if ($("#preset").value !== "custom") $("#bar").requestSubmit(); });
  $("#type").addEventListener("change", () => $("#bar").requestSubmit());
  $("#group-by").addEventListener("change", () => { state.groupBy = $("#group-by").value; writeUrl(false); loadTimeline().catch((e) => status(e.message, true)); });
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => { state.tab = b.dataset.tab; writeUrl(true); syncForm(); load(); });
  }
  let searchTimer;
  $("#search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.search = $("#search").value; writeUrl(false); flame.search = state.search; flame.draw();
      loadFunctionTimeline().catch((e) => status(e.message, true));
    }, 120);
  });
  $("#icicle").addEventListener("change", () => { state.icicle = $("#icicle").checked ? "1" : "0"; writeUrl(false); flame.draw(); diffFlame.draw(); });
  $("#glue").addEventListener("change", () => {
    const hide = $("#glue").checked;
    // The zoomed frame stays zoomed: its path loses (or finds again) the
    // glue above it.
    if (!state.sandwich && lastTree) state.focus = hide ? withoutGlue(flame.path()) : withGlue(lastTree, flame.path());
    state.glue = hide ? "hide" : "";
    writeUrl(false); showFlame(); showDiff();
  });
  $("#reset").addEventListener("click", resetView);
  $("#lanes").addEventListener("mousemove", (e) => {
    const r = $("#lanes").getBoundingClientRect();
    const hit = laneHit && laneHit(e.clientX - r.left, e.clientY - r.top);
    $("#lanes-tip").textContent = hit ? describe(hit) : "";
  });
  $("#lanes").addEventListener("click", (e) => {
    const r = $("#lanes").getBoundingClientRect();
    const hit = laneHit && laneHit(e.clientX - r.left, e.clientY - r.top);
    if (hit) openLane(hit, laneHit.source);
  });
  $("#tasks tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-task]");
    if (!tr) return;
    state.task = tr.dataset.task; writeUrl(true);
    loadTaskLatency().catch((err) => status(err.message, true));
  });
  $("#alerts tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-name]");
    if (tr) openAlert(tr);
  });
  $("#events tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-i]");
    if (tr) showEvent(Number(tr.dataset.i));
  });
  $("#task-flame").addEventListener("click", () => { if (state.task) openTask(state.task); });
  $("#locks tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-name]");
    if (tr) openLock(tr.dataset.name);
  });
  $("#sandwich-close").addEventListener("click", () => { state.sandwich = ""; writeUrl(true); showFlame(); });
  $("#filter").addEventListener("input", renderTop);
  for (const th of document.querySelectorAll("#top th")) {
    th.addEventListener("click", () => {
      const k = th.dataset.sort;
      sort = { key: k, dir: sort.key === k ? -sort.dir : (k === "name" ? 1 : -1) };
      renderTop();
    });
  }
  $("#top tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr"); if (!tr) return;
    // Focus: search for the function exactly; it lights up in the graph.
    for (const r of document.querySelectorAll("#top tr.focused")) r.classList.remove("focused");
    tr.classList.add("focused");
    state.search = "^" + tr.dataset.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$";
    $("#search").value = state.search;
    writeUrl(false);
    flame.search = state.search; flame.draw();
  });
  $("#top tbody").addEventListener("dblclick", (e) => {
    const tr = e.target.closest("tr"); if (!tr) return;
    state.sandwich = tr.dataset.name; state.search = ""; $("#search").value = "";
    writeUrl(true); showFlame();
  });
  $("#grew").addEventListener("click", () => {
    state.grew = "1"; state.tab = "compare";
    writeUrl(true); loadCompare().catch((e) => status(e.message, true));
  });
  $("#compare-run").addEventListener("click", () => {
    state.grew = "";
    state.rquery = $("#r-selector").value.trim(); state.rfrom = $("#r-from").value.trim(); state.runtil = $("#r-until").value.trim();
    writeUrl(true); loadCompare().catch((e) => status(e.message, true));
  });
  $("#export-folded").addEventListener("click", (e) => { e.preventDefault(); if (flame.root) download("profile.folded", folded(flame.root), "text/plain"); });
  $("#export-svg").addEventListener("click", (e) => { e.preventDefault(); if (flame.root) download("flamegraph.svg", svg(flame), "image/svg+xml"); });
  $("#theme").addEventListener("click", toggleTheme);
  document.addEventListener("keydown", (e) => {
    const typing = /INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName);
    if (e.key === "/" && !typing) { e.preventDefault(); $("#search").focus(); }
    else if (e.key === "Escape") { if (typing) document.activeElement.blur(); resetView(); }
    else if (e.key === "t" && !typing) toggleTheme();
  });
  addEventListener("popstate", () => { readUrl(); syncForm(); load(); });

  // A shared link names its query: draw it at once, and fill the type
  // list beside it.
  if (state.query) { syncForm(); load(); }
  loadTypes()
    .then(() => { syncForm(); if (!loading) return load(); })
    .catch((e) => status(e.message, true));
  loadCompletions().catch(() => {});
}

function resetView() {
  state.focus = ""; state.search = ""; state.sandwich = "";
  $("#search").value = "";
  writeUrl(true); showFlame();
}

function toggleTheme() {
  const t = dark() ? "light" : "dark";
  document.documentElement.dataset.theme = t;
  localStorage.setItem("kiln-theme", t);
  flame.draw(); diffFlame.draw();
  if (state.query) loadTimeline().catch(() => {});
}

function renderCrumbs() {
  const c = $("#crumbs");
  if (!flame.root || flame.zoom.length <= 1) { c.innerHTML = ""; return; }
  c.innerHTML = flame.zoom.map((n, i) => `<a data-depth="${i}">${esc(i ? n.name : "all")}</a>`).join(" › ");
  for (const a of c.querySelectorAll("a")) {
    a.addEventListener("click", () => {
      flame.zoom = flame.zoom.slice(0, Number(a.dataset.depth) + 1);
      if (!state.sandwich) { state.focus = flame.path(); writeUrl(true); }
      flame.draw();
    });
  }
}

// For tests and the curious: where frames are drawn, what is hit.
window.kiln = {
  state,
  rectOf: (name) => flame.rectOf(name),
  // Names of the frames drawn, labelled or not.
  drawn: () => flame.rects.map((r) => r.n.name),
  diffRectOf: (name) => diffFlame.rectOf(name),
  // Where a thread's lane has a step in `state` (CSS pixels of #lanes).
  lanePoint: (thread, state) => laneHit && laneHit.pointOf(thread, state),
  hit: (x, y) => { const b = flame.canvas.getBoundingClientRect(); const r = flame.hit(x - b.left, y - b.top); return r && r.n.name; },
};

init();
